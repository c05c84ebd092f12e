"""What a benchmark is asked to do: ``BenchSettings`` (the CLI options), ``Job`` (one artifact on
one backend), and their JSON round trip, which carries them to a worker process.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from formats.errors import UserError
from runtime.backends import get_backend
from runtime.model import DECODE_CHOICES


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
    budget_ms: float | None = None  # latency budget (SingleStream p90, batch 1): names the most accurate artifact within it
    decode: str = "auto"  # how --data images are decoded: auto (JPEG draft where export accepted it) | exact | jpeg-draft

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
        if self.decode not in DECODE_CHOICES:
            raise UserError(f"--decode must be one of {', '.join(DECODE_CHOICES)}, got {self.decode!r}")
        for name in self.backends:
            get_backend(name)  # an unknown name lists the valid ones


@dataclass(frozen=True)
class Job:
    artifact: str  # bundle file, or the checkpoint for the PyTorch reference
    backend: str
    precision: str
    target: str
    size_bytes: int


def settings_json(settings: BenchSettings) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()}


def settings_from_json(d: dict[str, Any]) -> BenchSettings:
    paths = {"data", "out", "reference_checkpoint"}
    fixed = {k: (Path(v) if k in paths and v is not None else tuple(v) if isinstance(v, list) else v)
             for k, v in d.items()}
    return BenchSettings(**fixed)
