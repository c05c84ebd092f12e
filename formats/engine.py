"""A TensorRT engine's sidecar (``model.<precision>.engine.json``): where the engine was built.

An engine runs only where TensorRT's version, the CUDA major version and the GPU's compute
capability match its build: export writes this record beside every engine (``python -m export
--trt``), the runtime reads it strictly before deserialising one (``runtime.backends.tensorrt``), on
another machine, so it is a versioned contract like the manifest.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from formats.files import write_json
from formats.records import read_record, to_dict

SCHEMA = "vl2lite-engine-sidecar"
SCHEMA_VERSION = 1
FIX = "rebuild the engine with python -m export --trt on the device"


@dataclass(frozen=True)
class EngineSidecar:
    tensorrt: str  # the TensorRT version that built the engine, e.g. "10.3.0"
    cuda: str  # the CUDA version of the build (PyTorch's), e.g. "12.6"
    gpu: str  # the GPU's name
    compute_capability: str  # e.g. "8.7"
    precision: str  # "fp16" or "int8"
    source: str  # the ONNX file of the bundle it was built from
    strongly_typed: bool  # built from a strongly typed network (the INT8 Q/DQ graph)
    min_batch: int  # the optimisation profile's batch sizes
    opt_batch: int
    max_batch: int
    workspace_gib: float  # the builder's workspace limit
    timing_cache: str  # the timing cache file the build used and updated
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION


def read_sidecar(path: str | Path) -> EngineSidecar:
    """The sidecar at ``path``, strictly: a missing, unknown or mistyped key is one error with the fix."""
    return read_record(path, EngineSidecar, SCHEMA, SCHEMA_VERSION, FIX)


def write_sidecar(path: str | Path, sidecar: EngineSidecar) -> None:
    write_json(Path(path), to_dict(sidecar))
