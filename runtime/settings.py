"""The runtime's settings: one frozen dataclass per command, each field one command-line option
(``formats.cli``: the comment after a field is its help), checked in ``__post_init__``.

``PredictSettings`` (``python -m runtime.predict``), ``BenchSettings`` (``python -m runtime.bench``,
recorded in bench.json as ``formats.bench_setup.BenchRequest``), ``ServeSettings``
(``python -m runtime.serve``).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from formats.bench_setup import BenchRequest
from formats.errors import UserError
from formats.preprocessing import DEFAULT_MAX_PIXELS, DECODE_MODES
from runtime.backends import get_backend

DECODE_CHOICES = ("auto", *DECODE_MODES)  # auto: JPEG draft decoding where export accepted it for the bundle


def _check_decode(decode: str) -> None:
    if decode not in DECODE_CHOICES:
        raise UserError(f"--decode must be one of {', '.join(DECODE_CHOICES)}, got {decode!r}")


@dataclass(frozen=True)
class PredictSettings:
    top_k: int = 5  # predictions per image
    backend: str = "onnxruntime"  # onnxruntime (CUDA when installed, else CPU), onnxruntime-cpu, tensorrt
    artifact: str | None = None  # a file of the bundle; default: the fastest within the accuracy budget here
    bench: Path | None = None  # bench.json picking the default artifact; default runs/bench/<bundle name>/bench.json
    json: bool = False  # print JSON instead of text
    decode: str = "auto"  # auto (JPEG draft decoding where export accepted it for the bundle) | exact | jpeg-draft
    verbose: bool = False  # show onnxruntime's/TensorRT's own warnings (also VL2LITE_VERBOSE=1)


@dataclass(frozen=True)
class BenchSettings:
    backends: tuple[str, ...] = field(default=(), metadata={"flag": "backend"})  # empty: every usable default
    artifacts: tuple[str, ...] = field(default=(), metadata={"flag": "artifact"})  # empty: every artifact
    batches: tuple[int, ...] = field(default=(1, 8, 32), metadata={"flag": "batch"})  # Offline batch sizes
    seconds: float = 1.5  # timed duration of each measurement (SingleStream, each Offline batch)
    min_iters: int = 3  # ...but at least this many runs, so slow batches still give a spread
    max_iters: int = 2000  # ...and at most this many
    warmup: int = 5  # untimed runs first
    threads: int = 0  # intra-op threads, 0 = backend default
    data: Path | None = None  # labelled images (CUB layout or class folders): adds top-1
    limit: int | None = None  # at most this many --data images
    out: Path | None = None  # default runs/bench/<bundle name>
    plots: bool = True  # write the two PNG plots (needs matplotlib)
    reference_checkpoint: Path | None = None  # best.pt: adds a PyTorch eager row (needs the training packages)
    timeout_s: float = field(default=1800.0, metadata={"flag": "timeout"})  # per artifact and backend, seconds
    budget_ms: float | None = None  # latency budget (SingleStream p50, batch 1): names the most accurate artifact within it
    decode: str = "auto"  # how --data images are decoded: auto (JPEG draft where export accepted it) | exact | jpeg-draft
    verbose: bool = False  # show onnxruntime's/TensorRT's own warnings (also VL2LITE_VERBOSE=1); not recorded

    def __post_init__(self) -> None:
        if not self.batches or min(self.batches) < 1:
            raise UserError(f"--batch needs positive batch sizes, got {self.batches}")
        if self.seconds <= 0 or self.warmup < 0 or self.min_iters < 1 or self.threads < 0:
            raise UserError("--seconds must be > 0, --warmup and --threads >= 0")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}")
        if self.budget_ms is not None and self.budget_ms <= 0:
            raise UserError(f"--budget-ms must be > 0 milliseconds, got {self.budget_ms}")
        if self.timeout_s <= 0:
            raise UserError(f"--timeout must be > 0 seconds, got {self.timeout_s}")
        _check_decode(self.decode)
        for name in self.backends:
            get_backend(name)  # an unknown name lists the valid ones

    def record(self) -> BenchRequest:
        """The settings as bench.json records them (paths as text; ``verbose`` is not a figure's setting)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(BenchRequest)}
        return BenchRequest(**{k: str(v) if isinstance(v, Path) else v for k, v in values.items()})

    @classmethod
    def from_record(cls, record: BenchRequest) -> "BenchSettings":
        """The settings back from their record (a worker process gets them so)."""
        values = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
        paths = {"data", "out", "reference_checkpoint"}
        return cls(**{k: Path(v) if k in paths and v is not None else v for k, v in values.items()})


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"  # loopback; 0.0.0.0 listens on every interface
    port: int = 8000
    backend: str = "onnxruntime"  # onnxruntime (CUDA when installed, else CPU), onnxruntime-cpu, tensorrt
    artifact: str | None = None  # a file of the bundle; default: the fastest within the accuracy budget here
    bench: Path | None = None  # bench.json picking the default artifact; default runs/bench/<bundle name>/bench.json
    max_batch: int = 16  # rows per model call; capped by the bundle's max_batch
    max_delay_ms: float = 5.0  # how long the oldest request may wait for a batch to fill
    max_queue: int = 128  # requests waiting; more are refused with 503
    max_body_mb: float = 10.0  # larger request bodies are refused with 413
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are refused with 413 before they are decoded
    top_k: int = 5  # predictions per image
    threads: int = 0  # intra-op threads of the model, 0 = backend default
    decode: str = "auto"  # auto (JPEG draft decoding where export accepted it for the bundle) | exact | jpeg-draft
    decode_workers: int = 0  # images decoded (and KServe bodies parsed) at once, 0 = one per CPU core
    body_timeout_s: float = 10.0  # seconds a client has to send its whole request body; a slower one gets 408
    max_uploads: int = 256  # request bodies being received at once; more are refused with 503
    verbose: bool = False  # show onnxruntime's/TensorRT's own warnings (also VL2LITE_VERBOSE=1)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise UserError(f"--port must be 1..65535, got {self.port}")
        if self.max_batch < 1 or self.max_queue < 1 or self.max_delay_ms < 0:
            raise UserError("--max-batch and --max-queue must be >= 1, --max-delay-ms >= 0")
        if self.max_body_mb <= 0 or self.max_pixels < 1 or self.top_k < 1:
            raise UserError("--max-body-mb, --max-pixels and --top-k must be positive")
        if self.decode_workers < 0:
            raise UserError(f"--decode-workers must be >= 0 (0: one per CPU core), got {self.decode_workers}")
        if not 0 < self.body_timeout_s < math.inf:  # NaN fails both comparisons
            raise UserError(f"--body-timeout-s must be a positive, finite number of seconds (the time a client has "
                            f"to send its whole request body), got {self.body_timeout_s}")
        if self.max_uploads < 1:
            raise UserError(f"--max-uploads must be >= 1 (request bodies received at once), got {self.max_uploads}")

    @property
    def workers(self) -> int:
        return self.decode_workers or os.cpu_count() or 1

    @property
    def max_inflight(self) -> int:
        return self.max_queue + self.max_batch
