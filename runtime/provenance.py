"""Where an artifact's accuracy was measured, against where it runs now (``formats.isa``).

At start, ``predict`` and ``serve`` print one line when an INT8 artifact's figures come from a CPU
of another integer-kernel class (or from nowhere recorded): the manifest's top-1 may not hold
here. ``bench --data`` re-measures the drop on this device instead (runtime.bench.compare).
"""
from __future__ import annotations

from formats.bundle import Artifact
from formats.isa import provenance_note


def startup_note(art: Artifact) -> str | None:
    """The one line to print before serving ``art`` here, or None.

    Only the CPU INT8 graph: float kernels give the same top-1 on every CPU up to rounding, while
    onnxruntime picks its integer kernels by CPUID (formats.isa). The TensorRT graph and engines
    are computed by a GPU, and the sidecar check already refuses an engine built for another one."""
    if art.precision != "int8" or art.format != "onnx" or art.target != "onnxruntime-cpu":
        return None
    return provenance_note(art.file, art.measured_on)
