"""What a benchmark figure was measured with, as bench.json and frontier.json record it: the device
(``DeviceInfo``), the software (``SoftwareVersions``) and what was asked (``BenchRequest``).

``runtime.device`` fills the first two on the device; ``runtime.settings.BenchSettings.record()``
the third. Read and written through ``formats.records``, strictly.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuInfo:
    """One ``nvidia-smi --query-gpu`` line, as the tool prints each value (units included)."""

    name: str
    driver_version: str
    memory_total: str  # e.g. "81559 MiB"
    clocks_sm: str  # the current SM clock, e.g. "1980 MHz"
    clocks_max_sm: str
    power_limit: str  # e.g. "700.00 W"


@dataclass(frozen=True)
class JetsonInfo:
    l4t: str  # the first line of /etc/nv_tegra_release
    power_mode: str | None  # ``nvpmodel -q``; None where the tool is absent
    clocks_hz: dict[str, int]  # CPU cores and devfreq devices (GPU, EMC, DLA) -> current clock


@dataclass(frozen=True)
class DeviceInfo:
    hostname: str
    platform: str
    machine: str
    cpu: str  # the CPU model name
    cpu_cores: int | None
    memory_gb: float | None  # None where /proc/meminfo cannot be read
    isa: str  # the integer-kernel class (formats.isa): whether INT8 figures carry over
    gpus: tuple[GpuInfo, ...]  # empty without nvidia-smi
    jetson: JetsonInfo | None  # None off a Jetson


@dataclass(frozen=True)
class SoftwareVersions:
    """The versions of what ran the figures; None: not installed."""

    python: str
    numpy: str | None
    Pillow: str | None
    onnxruntime: str | None
    onnxruntime_providers: tuple[str, ...] | None
    tensorrt: str | None
    starlette: str | None
    uvicorn: str | None


@dataclass(frozen=True)
class BenchRequest:
    """The benchmark's settings as recorded (``runtime.settings.BenchSettings``, paths as text)."""

    backends: tuple[str, ...]  # empty: every usable default
    artifacts: tuple[str, ...]  # empty: every artifact
    batches: tuple[int, ...]  # Offline batch sizes
    seconds: float  # timed duration of each measurement
    min_iters: int
    max_iters: int
    warmup: int
    threads: int  # 0: the backend's default
    data: str | None  # the labelled images top-1 was measured on
    limit: int | None
    out: str | None
    plots: bool
    reference_checkpoint: str | None
    timeout_s: float
    budget_ms: float | None
    decode: str
