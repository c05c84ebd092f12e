"""The export backends: every module of the ``export.backends`` package declares one.

Adding a backend is one new file, ``export/backends/<module>.py``, that declares
``BACKEND = Backend(name=..., order=..., build=..., help=...)`` (``export.job``): the command line
gains ``--<name>`` (``python -m export``), ``ExportOptions(backends=(<name>,))`` asks for it in
code, and ``export_bundle`` runs it in its declared order, its artifacts held to the accuracy
budget and listed in the manifest. A module there that declares no backend is an error, as are
two backends with one name or one order (the build order must not depend on file names).
"""
from __future__ import annotations

import functools
import importlib
import pkgutil

import export.backends
from export.job import Backend
from export.settings import ExportOptions
from formats.errors import UserError


@functools.cache
def backends() -> tuple[Backend, ...]:
    """Every registered backend, in build order (``backends.cache_clear()`` after adding a module)."""
    found: dict[str, Backend] = {}
    for info in sorted(pkgutil.iter_modules(export.backends.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"export.backends.{info.name}")
        backend = getattr(module, "BACKEND", None)
        if not isinstance(backend, Backend):
            raise TypeError(f"{module.__file__} is in the export.backends package but declares no "
                            f"BACKEND = export.job.Backend(...): declare one, or move the module out of the package")
        if backend.name in found:
            raise TypeError(f"two export backends are named {backend.name!r}: {module.__name__} and another module")
        found[backend.name] = backend
    ordered = sorted(found.values(), key=lambda b: b.order)
    for a, b in zip(ordered, ordered[1:]):
        if a.order == b.order:
            raise TypeError(f"export backends {a.name!r} and {b.name!r} both declare order {a.order}: give each its own")
    return tuple(ordered)


def names() -> list[str]:
    return [b.name for b in backends()]


def wanted_backends(options: ExportOptions) -> list[Backend]:
    """The backends ``options`` runs, in build order; an unknown name lists the registered ones."""
    unknown = sorted(set(options.backends) - set(names()))
    if unknown:
        raise UserError(f"unknown export backend {unknown[0]!r}: choose from {', '.join(names())}")
    return [b for b in backends() if b.is_wanted(options)]
