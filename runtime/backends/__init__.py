"""Inference backends behind one interface (``Session.run``), one module per backend.

Registered names: ``onnxruntime-cpu``, ``onnxruntime-cuda``, ``onnxruntime-tensorrt`` (onnxruntime
with that execution provider), ``onnxruntime`` (CUDA when installed, else CPU) and ``tensorrt``
(native engines). Each module imports its heavy library only when a session is opened.
"""
from runtime.backends import onnxruntime as _onnxruntime  # noqa: F401  (registers its backends)
from runtime.backends import tensorrt as _tensorrt  # noqa: F401
from runtime.backends.base import (BackendSpec, Session, SessionOptions, available_backends, get_backend, list_backends,
                                   register_backend, require_available)

__all__ = ["BackendSpec", "Session", "SessionOptions", "available_backends", "get_backend", "list_backends",
           "register_backend", "require_available"]
