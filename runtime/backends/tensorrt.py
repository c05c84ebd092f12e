"""Native TensorRT engines (``*.engine`` with a JSON sidecar), through the TensorRT 10/11 Python API.

An engine runs only on the TensorRT version, CUDA version and GPU compute capability that built
it, so the sidecar is checked (``engine_problems``, a pure function) before deserialising; on a
mismatch the message says to rebuild the engine from the ONNX file on this device.
Device memory uses cuda-python (``pip install cuda-python``), NVIDIA's own bindings.

This module is written against NVIDIA's documented API (trt.Runtime, deserialize_cuda_engine,
num_io_tensors, get_tensor_name, set_input_shape, set_tensor_address, execute_async_v3); it has
not run here, because TensorRT cannot be installed on the development machines.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from formats.errors import UserError
from formats.engine import EngineSidecar, read_sidecar
from runtime.backends.base import BackendSpec, SessionOptions, register_backend

if TYPE_CHECKING:
    from formats.bundle import Artifact

NOT_INSTALLED = ("TensorRT is not installed: install NVIDIA's tensorrt Python package (on a Jetson it comes "
                 "with JetPack: python3-libnvinfer) and cuda-python, or use --backend onnxruntime-cpu")


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return NOT_INSTALLED
    if _cudart_module() is None:
        return "cuda-python is not installed (TensorRT needs it here for device memory): pip install cuda-python"
    return None


def _cudart_module() -> Any:
    for name in ("cuda.bindings.runtime", "cuda.cudart"):  # cuda-python >= 12.6, then older releases
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _version(text: Any, parts: int) -> tuple[str, ...]:
    return tuple(str(text).split("+")[0].split(".")[:parts])


def engine_problems(sidecar: EngineSidecar, env: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Compare an engine's build environment with this one: (errors, warnings).

    Errors: a different TensorRT version (major.minor.patch), CUDA major version or GPU compute
    capability; any of them makes deserialisation fail or the engine misbehave. Only the CUDA major
    is compared: export records the CUDA that PyTorch was built with, this side the CUDA runtime
    that cuda-python loads, and within a major they are compatible (the TensorRT check is exact). A
    different GPU name with the same compute capability loads but may be slower: a warning.
    """
    errors, warnings = [], []
    checks = [("tensorrt", "TensorRT", 3), ("cuda", "CUDA", 1), ("compute_capability", "compute capability", 2)]
    for key, label, parts in checks:
        built, here = getattr(sidecar, key), env.get(key)
        if here is not None and _version(built, parts) != _version(here, parts):
            errors.append(f"built with {label} {built}, this device has {here}")
    if sidecar.gpu and env.get("gpu") and sidecar.gpu != env["gpu"]:
        warnings.append(f"built on {sidecar.gpu}, running on {env['gpu']} (same compute capability): "
                        f"rebuild on this GPU for best speed")
    return errors, warnings


def check_engine(artifact: "Artifact", env: dict[str, Any]) -> list[str]:
    """Raise a clear error if the engine cannot run here; return the warnings."""
    if artifact.sidecar is None or not artifact.sidecar.is_file():
        raise UserError(f"engine {artifact.file} has no sidecar JSON: rebuild it with python -m export --trt")
    sidecar = read_sidecar(artifact.sidecar)
    errors, warnings = engine_problems(sidecar, env)
    if errors:
        source = sidecar.source
        raise UserError(f"engine {artifact.file} cannot run here ({'; '.join(errors)}): rebuild it from "
                               f"{source} on this device with python -m export --trt")
    return warnings


def current_environment(device_id: int = 0) -> dict[str, Any]:
    trt, cudart = importlib.import_module("tensorrt"), _cudart_module()
    version = _cuda_call(cudart.cudaRuntimeGetVersion())  # e.g. 12060
    props = _cuda_call(cudart.cudaGetDeviceProperties(device_id))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"tensorrt": trt.__version__, "cuda": f"{version // 1000}.{version % 1000 // 10}",
            "gpu": name.strip("\x00 "), "compute_capability": f"{props.major}.{props.minor}"}


def _cuda_call(result: Any) -> Any:
    """cuda-python returns (error, value...) tuples; raise on an error code."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA call failed with error {err}")
    return values[0] if len(values) == 1 else (values or None)


class TrtSession:
    """One engine, one execution context, one stream; buffers sized for the engine's max batch."""

    def __init__(self, artifact: "Artifact", options: SessionOptions) -> None:
        trt, self._cudart = importlib.import_module("tensorrt"), _cudart_module()
        env = current_environment(options.device_id)
        for warning in check_engine(artifact, env):
            print(f"warning: {artifact.file}: {warning}", file=sys.stderr)
        quiet = trt.Logger.WARNING if options.chatty else trt.Logger.ERROR  # its warnings only when asked
        self._engine = trt.Runtime(trt.Logger(quiet)).deserialize_cuda_engine(
            Path(artifact.path).read_bytes())
        if self._engine is None:
            raise UserError(f"TensorRT could not deserialise {artifact.file}: rebuild it with python -m export --trt")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._input = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self._output = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self._stream = _cuda_call(self._cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity in bytes)
        self.backend, self.device = "tensorrt", env["gpu"]

    def close(self) -> None:
        """Free the device buffers and the stream (also on garbage collection); idempotent."""
        cudart, self._cudart = getattr(self, "_cudart", None), None
        if cudart is None:
            return
        for ptr, _ in getattr(self, "_buffers", {}).values():
            cudart.cudaFree(ptr)
        self._buffers = {}
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        self.close()

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, capacity = self._buffers.get(name, (0, 0))
        if capacity < nbytes:
            if ptr:
                _cuda_call(self._cudart.cudaFree(ptr))
            ptr = int(_cuda_call(self._cudart.cudaMalloc(nbytes)))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, batch: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self._context.set_input_shape(self._input, batch.shape)
        out = np.empty(tuple(self._context.get_tensor_shape(self._output)), dtype=np.float32)
        d_in = self._device_buffer(self._input, batch.nbytes)
        d_out = self._device_buffer(self._output, out.nbytes)
        self._context.set_tensor_address(self._input, d_in)
        self._context.set_tensor_address(self._output, d_out)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _cuda_call(cudart.cudaMemcpyAsync(d_in, batch.ctypes.data, batch.nbytes, h2d, self._stream))
        if not self._context.execute_async_v3(self._stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        _cuda_call(cudart.cudaMemcpyAsync(out.ctypes.data, d_out, out.nbytes, d2h, self._stream))
        _cuda_call(cudart.cudaStreamSynchronize(self._stream))  # the result is on the host when run returns
        return out


register_backend(BackendSpec("tensorrt", "native TensorRT engine (.engine + sidecar JSON)", frozenset({"tensorrt"}),
                             frozenset({"tensorrt"}), unavailable_reason, TrtSession))
