"""One benchmark job and what its worker process answers, typed both ways (``formats.records``).

The parent writes a ``WorkerRequest`` as JSON for a fresh interpreter (runtime.bench.worker); the
worker writes back a ``WorkerResult``: the ``Measurement``, or the error that stopped it. Both
sides are this same package, so these files carry no schema version; they are read strictly all
the same, so a change on one side that the other does not follow fails loudly.
"""
from __future__ import annotations

from dataclasses import dataclass

from formats.bench import Latency, OfflinePoint
from formats.bench_setup import BenchRequest


@dataclass(frozen=True)
class Job:
    artifact: str  # bundle file, or the checkpoint for the PyTorch reference
    backend: str
    precision: str
    target: str
    size_bytes: int


@dataclass(frozen=True)
class PreparedData:
    """The --data images, decoded and preprocessed once into .npy files the workers memory-map."""

    x: str  # (N, 3, H, W) float32
    y: str  # (N,) int64
    images: int  # N
    decode: str  # exact | jpeg-draft


@dataclass(frozen=True)
class Timing:
    single_stream: Latency  # batch 1
    offline: tuple[OfflinePoint, ...]  # one per --batch size
    best_fps: float | None  # the best Offline throughput; None: no batch size ran
    best_batch: int | None


@dataclass(frozen=True)
class Scored:
    """Top-1 on the prepared images, and each image's predicted class: the parent pairs them with the
    FP32 model's to re-measure the drop. Class indices, not logits: N integers travel back, not N x C floats."""

    top1: float
    images: int
    predictions: tuple[int, ...]  # (N,)


@dataclass(frozen=True)
class Measurement:
    device: str  # the session's device, e.g. "onnxruntime-cpu (CPUExecutionProvider)"
    load_s: float
    timing: Timing
    baseline_rss_mb: float  # the worker's peak resident memory before the model was loaded
    peak_rss_mb: float  # ... and after the timed runs
    power_mw: float | None  # Jetson only: mean module input power
    scored: Scored | None  # with --data


@dataclass(frozen=True)
class WorkerRequest:
    bundle: str  # the bundle folder
    job: Job
    settings: BenchRequest
    data: PreparedData | None


@dataclass(frozen=True)
class WorkerResult:
    measurement: Measurement | None
    error: str | None  # a UserError's message: the row fails with it
