"""onnxruntime backends: one per execution provider (CPU, CUDA, TensorRT) plus an automatic choice.

onnxruntime quietly drops a provider whose libraries fail to load and runs on the CPU instead;
``OrtSession`` checks which provider the session really got and refuses a silent fallback. Its own
warnings (unused initializers, node placement, provider setup) are silenced unless
``SessionOptions.verbose`` or ``VL2LITE_VERBOSE=1`` asks for them; errors always show.
"""
from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from formats.errors import UserError
from runtime.backends.base import BackendSpec, SessionOptions, register_backend

if TYPE_CHECKING:
    from formats.bundle import Artifact

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
WARNING, ERROR = 2, 3  # onnxruntime's log severities
_INSTALL_GPU = ("install onnxruntime-gpu (on a Jetson: NVIDIA's onnxruntime-gpu wheel for your JetPack) "
                "instead of onnxruntime")


def _ort() -> Any:
    return importlib.import_module("onnxruntime")


def installed_providers() -> list[str]:
    try:
        return list(_ort().get_available_providers())
    except ImportError:
        return []


class OrtSession:
    """An onnxruntime InferenceSession with the bundle's single input and output."""

    def __init__(self, artifact: "Artifact", provider: str, backend: str, options: SessionOptions) -> None:
        ort = _ort()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        severity = WARNING if options.chatty else ERROR  # unused initializers, node placement: noise to a user
        so.log_severity_level = severity
        ort.set_default_logger_severity(severity)  # the process-wide logger: provider setup and fallbacks
        if options.threads > 0:
            so.intra_op_num_threads = options.threads
        if not options.spin:  # spinning threads would take the CPU that decodes the next requests
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        providers = [(provider, _provider_options(provider, artifact, options))]
        if provider == TRT and CUDA in installed_providers():
            providers.append((CUDA, _provider_options(CUDA, artifact, options)))  # what TensorRT rejects stays on the GPU
        if provider != CPU:
            providers.append((CPU, {}))  # nodes no GPU provider can run; the main provider is checked below
        try:
            with warnings.catch_warnings():
                if not options.chatty:  # its Python-side UserWarnings (provider lists) as well
                    warnings.filterwarnings("ignore", module="onnxruntime")
                self._sess = ort.InferenceSession(str(artifact.path), so, providers=providers)
        except Exception as exc:  # onnxruntime's InvalidProtobuf, InvalidGraph, Fail, ...: a damaged bundle file
            if not type(exc).__module__.startswith("onnxruntime"):
                raise
            raise UserError(f"onnxruntime cannot load bundle file {artifact.file} ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]}): re-export the bundle") from None
        active = self._sess.get_providers()
        if not active or active[0] != provider:
            raise UserError(f"onnxruntime could not start {provider} for {artifact.file} (active: "
                                   f"{', '.join(active)}): check the CUDA/TensorRT libraries, or pick "
                                   f"--backend onnxruntime-cpu")
        self._input = self._sess.get_inputs()[0].name
        self._output = self._sess.get_outputs()[0].name
        self.backend, self.device = backend, provider

    def run(self, batch: np.ndarray) -> np.ndarray:
        # Numpy in, numpy out: onnxruntime copies the result to the host, which synchronises the GPU.
        return self._sess.run([self._output], {self._input: batch})[0]


def _provider_options(provider: str, artifact: "Artifact", options: SessionOptions) -> dict[str, Any]:
    if provider == CUDA:
        return {"device_id": options.device_id}
    if provider == TRT:
        cache = Path(artifact.path).parent / ".ort-trt-cache"  # engines are built once per device
        return {"device_id": options.device_id, "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True}
    return {}


def _unavailable(provider: str) -> str | None:
    providers = installed_providers()
    if not providers:
        return "onnxruntime is not installed: pip install onnxruntime (CPU) or onnxruntime-gpu"
    if provider not in providers:
        return f"this onnxruntime has no {provider} (it has {', '.join(providers)}): {_INSTALL_GPU}"
    return None


def auto_provider() -> str:
    """CUDA when this onnxruntime has it, else CPU (TensorRT builds engines for minutes: ask for it)."""
    return CUDA if CUDA in installed_providers() else CPU


def _auto_backend() -> str:
    return "onnxruntime-cuda" if auto_provider() == CUDA else "onnxruntime-cpu"


def _spec(name: str, provider: str | None, targets: set[str], description: str) -> BackendSpec:
    def unavailable() -> str | None:
        return _unavailable(provider or auto_provider())

    def open_session(artifact: "Artifact", options: SessionOptions) -> OrtSession:
        return OrtSession(artifact, provider or auto_provider(), name, options)

    return BackendSpec(name, description, frozenset({"onnx"}), frozenset(targets), unavailable, open_session,
                       None if provider else _auto_backend)


register_backend(_spec("onnxruntime-cpu", CPU, {"any", "onnxruntime-cpu"}, "onnxruntime, CPU provider"))
register_backend(_spec("onnxruntime-cuda", CUDA, {"any", "gpu"}, "onnxruntime, CUDA provider"))
register_backend(_spec("onnxruntime-tensorrt", TRT, {"any", "gpu", "tensorrt"},
                       "onnxruntime, TensorRT provider (engines cached beside the bundle)"))
register_backend(_spec("onnxruntime", None, set(),  # runs what the backend it resolves to runs
                       "onnxruntime, CUDA provider when installed, else CPU"))
