"""Student families, one module each: ``load_families`` imports (and so registers) every module here.

A family module declares one ``StudentFamily`` (``students.families.base``) under its prefix and
calls ``register_family``; ``students.registry`` dispatches on the prefix. Adding a family is one
new file here (or, outside the package, one module imported before the student is built).
"""
from __future__ import annotations

import importlib
import pkgutil


def load_families() -> None:
    """Import every family module of this package (once; Python caches the imports)."""
    for name in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if name != "base":
            importlib.import_module(f"students.families.{name}")
