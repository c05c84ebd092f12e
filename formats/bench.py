"""``bench.json``: one bundle benchmarked on one device (``python -m runtime.bench <bundle>``).

One ``BenchRow`` per (artifact, backend): measured (``status`` "ok"), ``skipped`` (nothing usable
here runs it) or ``failed`` (the worker crashed, erred or timed out), with ``note`` saying why.
``runtime.bench`` writes it with ``write_bench``; readers use ``read_bench``. Strict both ways
(``formats.records``): every key is written (null when absent); a missing key (a row's figures aside:
absent reads as null), an unknown key or a value of the wrong type is one error naming the file and the key.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from formats.bench_setup import BenchRequest, DeviceInfo, SoftwareVersions
from formats.errors import UserError
from formats.files import write_json
from formats.frontier import BudgetPick
from formats.records import read_record, to_dict

SCHEMA = "vl2lite-bench"
SCHEMA_VERSION = 2  # 2: every key written (null when absent), offline latency nested, the record typed
FIX = "benchmark the bundle again with python -m runtime.bench"
STATUSES = ("ok", "skipped", "failed")


@dataclass(frozen=True)
class Latency:
    """Latency of one kind of run, milliseconds per call."""

    p50_ms: float
    p90_ms: float  # MLPerf's SingleStream metric
    p99_ms: float
    mean_ms: float
    min_ms: float
    iterations: int
    p99_reliable: bool  # False: fewer than 100 runs, so p99 is about the slowest run


@dataclass(frozen=True)
class OfflinePoint:
    """Offline throughput at one batch size, or why that size was not run."""

    batch: int
    images_per_s: float | None
    latency: Latency | None  # per batch
    skipped: str | None  # e.g. "over the bundle's max_batch 8"


@dataclass(frozen=True)
class Recorded:
    """The manifest's figures of the artifact (export's reference split) and where they were measured."""

    top1: float | None
    top1_drop: float | None  # points below the PyTorch student
    top1_drop_ci95: float | None
    measured_on: dict[str, str] | None  # formats.isa: {"isa", "cpu", "machine", "engine", ...}


@dataclass(frozen=True)
class DropHere:
    """The top-1 drop re-measured here on --data against the FP32 ONNX model (paired, 95% interval)."""

    top1_drop: float  # points
    top1_drop_ci95: float
    images: int
    isa: str  # this CPU's integer-kernel class


@dataclass(frozen=True)
class BenchRow:
    artifact: str  # the bundle file (or the checkpoint's file name for the torch-eager reference)
    backend: str | None  # None on a skipped row
    precision: str
    target: str
    size_mb: float
    status: str  # ok | skipped | failed
    note: str | None  # why skipped or failed
    device: str | None = None  # the session's device, e.g. "onnxruntime-cpu (CPUExecutionProvider)"
    load_s: float | None = None
    single_stream: Latency | None = None  # batch 1
    offline: tuple[OfflinePoint, ...] = ()
    best_fps: float | None = None
    best_batch: int | None = None
    baseline_rss_mb: float | None = None  # the worker's peak resident memory before loading the model
    peak_rss_mb: float | None = None  # ... and after the timed runs
    power_mw: float | None = None  # Jetson: mean module input power (tegrastats)
    top1: float | None = None  # on --data
    images: int | None = None  # --data images scored
    recorded: Recorded | None = None  # with --data: the manifest's figures beside ...
    here: DropHere | None = None  # ... the drop here (None: the FP32 yardstick itself, or no yardstick)
    differs: bool | None = None  # the two drops apart beyond both intervals; None: not judged

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise UserError(f"bench row {self.artifact}: status {self.status!r} is not one of {', '.join(STATUSES)}")
        if (self.status == "ok") != (self.single_stream is not None):
            raise UserError(f"bench row {self.artifact}: a row has its single_stream latency exactly when its "
                            f"status is 'ok': {FIX}")

    @property
    def label(self) -> str:
        return f"{self.artifact} on {self.backend}"


@dataclass(frozen=True)
class ModelInput:
    name: str  # the model's input tensor, e.g. "input"
    shape: tuple[int, ...]  # (-1, 3, H, W): any batch
    dtype: str  # "float32"


@dataclass(frozen=True)
class BenchBundle:
    path: str
    name: str
    arch: str
    input: ModelInput
    # file -> sha256 of every artifact measured (the manifest's): predict and serve use the figures
    # only for these very files (runtime.choice). None: written before checksums were recorded.
    artifacts_sha256: dict[str, str] | None = None


@dataclass(frozen=True)
class BenchData:
    """The --data images top-1 was measured on."""

    root: str
    images: int
    decode: str  # exact | jpeg-draft
    fp32_reference: str | None  # what the drops were measured against, e.g. "model.onnx on onnxruntime-cpu"
    no_reference: str | None  # why there is none


@dataclass(frozen=True)
class BenchReport:
    schema: str
    schema_version: int
    created: str  # UTC, ISO 8601
    bundle: BenchBundle
    device: DeviceInfo
    software: SoftwareVersions
    settings: BenchRequest
    data: BenchData | None  # None: no --data
    results: tuple[BenchRow, ...]  # measured rows first
    budget: BudgetPick | None  # None: no --budget-ms


def read_bench(path: str | Path) -> BenchReport:
    """bench.json, strictly: a missing, unknown or mistyped key is one error naming the file and the key."""
    return read_record(path, BenchReport, SCHEMA, SCHEMA_VERSION, FIX)


def write_bench(path: str | Path, report: BenchReport) -> None:
    write_json(Path(path), to_dict(report))
