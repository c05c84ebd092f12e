"""The one small interface every backend implements, and the registry that names them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from formats.errors import UserError

if TYPE_CHECKING:
    from formats.bundle import Artifact


class Session(Protocol):
    """A loaded model: float32 (N, 3, H, W) in, float32 (N, C) logits out, on the host.

    ``run`` returns only when the result is on the host, so a wall-clock timer around it measures
    the whole inference (on a GPU it synchronises).
    """

    backend: str
    device: str  # what actually runs it, e.g. "CPUExecutionProvider" or the GPU name

    def run(self, batch: np.ndarray) -> np.ndarray: ...


VERBOSE_ENV = "VL2LITE_VERBOSE"


@dataclass(frozen=True)
class SessionOptions:
    threads: int = 0  # intra-op threads; 0 lets the backend decide
    spin: bool = True  # let idle worker threads spin (lowest latency); a server turns it off
    device_id: int = 0
    verbose: bool = False  # the runtime library's own warnings too (onnxruntime, TensorRT); also VL2LITE_VERBOSE=1

    @property
    def chatty(self) -> bool:
        """Whether third-party warnings are shown: ``verbose``, or the environment variable (a bench
        worker process inherits it)."""
        return self.verbose or os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class BackendSpec:
    """A named way to run artifacts of some formats and targets."""

    name: str
    description: str
    formats: frozenset[str]
    targets: frozenset[str]
    unavailable_reason: Callable[[], str | None]  # None when usable here, else why not and the fix
    open: Callable[["Artifact", SessionOptions], Session]
    resolves_to: Callable[[], str] | None = None  # an automatic choice: the backend it runs as here

    def accepts(self, artifact: "Artifact") -> bool:
        if self.resolves_to is not None:  # e.g. onnxruntime on a CPU runs what onnxruntime-cpu runs, INT8 too
            return get_backend(self.resolves_to()).accepts(artifact)
        return artifact.format in self.formats and artifact.target in self.targets

    @property
    def here(self) -> str:
        """The backend this one runs as on this machine (itself, unless it is an automatic choice)."""
        return self.resolves_to() if self.resolves_to is not None else self.name


_REGISTRY: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> None:
    if spec.name in _REGISTRY:
        raise ValueError(f"backend {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def list_backends() -> list[str]:
    return list(_REGISTRY)


def get_backend(name: str) -> BackendSpec:
    if name not in _REGISTRY:
        raise UserError(f"unknown backend {name!r}: choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def require_available(spec: BackendSpec) -> BackendSpec:
    """The backend, or a clear error saying why it cannot run here (never a silent fallback)."""
    reason = spec.unavailable_reason()
    if reason is not None:
        raise UserError(f"backend {spec.name} is not usable here: {reason}")
    return spec


def available_backends() -> list[str]:
    return [name for name, spec in _REGISTRY.items() if spec.unavailable_reason() is None]


REFERENCE_GROUP = "vl2lite_edge.reference_sessions"  # entry points: name -> Session class taking a checkpoint


def open_reference(name: str, checkpoint: Path) -> Session:
    """A reference session (``torch-eager``: the PyTorch student) from an installed plugin.

    The runtime never imports torch: the training side registers the session class as an entry
    point, so it exists only where torch and the training packages are installed.
    """
    found = [ep for ep in entry_points(group=REFERENCE_GROUP) if ep.name == name]
    if not found:
        raise UserError(f"no {name} reference is installed: the PyTorch reference is a plugin of the training "
                        f"packages, registered when the package is pip-installed (pip install 'vl2lite-edge[train]', "
                        f"or pip install -e '.[train]' in a checkout; PYTHONPATH alone does not register it); "
                        f"or drop --reference-checkpoint")
    try:
        session_class = found[0].load()
    except ImportError as exc:
        raise UserError(f"the {name} reference cannot load ({exc}): install the training packages "
                        f"(pip install 'vl2lite-edge[train]'), or drop --reference-checkpoint") from None
    return session_class(checkpoint)
