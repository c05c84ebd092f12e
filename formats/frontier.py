"""``frontier.json``: several bundles benchmarked on one device (``python -m runtime.bench b1 b2 ...``),
the accuracy/latency frontier per precision and the pick within a latency budget.

``runtime.bench`` writes it with ``write_frontier``; the sweep (and anyone else) reads it with
``read_frontier``. ``BudgetPick`` is also bench.json's ``budget`` (one bundle with ``--budget-ms``).
Strict both ways (``formats.records``): every key is written (null when absent); a missing key, an
unknown key or a value of the wrong type is one error naming the file and the key.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from formats.bench_setup import BenchRequest, DeviceInfo
from formats.files import write_json
from formats.records import read_record, to_dict

SCHEMA = "vl2lite-frontier"
SCHEMA_VERSION = 2  # 2: every key written (null when absent), GPU fields renamed, the record typed
FIX = "benchmark the bundles again with python -m runtime.bench b1 b2 ..."


@dataclass(frozen=True)
class FrontierRow:
    """One measured (bundle, artifact, backend): accuracy against SingleStream latency at batch 1."""

    bundle: str  # the bundle's folder name under the output folder (a repeated name numbered: name-2)
    arch: str
    artifact: str  # the bundle file, e.g. "model.int8.onnx"
    backend: str
    precision: str  # fp32 | fp16 | int8: each precision has its own frontier
    top1: float | None  # a fraction; None: neither measured nor recorded
    top1_source: str  # "measured (--data)" or "export (test split)"
    p50_ms: float  # SingleStream latency, batch 1
    p90_ms: float
    best_fps: float | None  # Offline throughput at the best batch
    size_mb: float
    within_accuracy_budget: bool  # False: export marked it over the bundle's accuracy budget
    frontier: bool  # no faster row of its precision is at least as accurate

    @property
    def label(self) -> str:
        return f"{self.bundle} {self.artifact} on {self.backend}"


@dataclass(frozen=True)
class BudgetPick:
    """The most accurate row within ``budget_ms`` (``met``), else the fastest one, said in ``message``."""

    budget_ms: float  # the latency budget, SingleStream p50 at batch 1
    met: bool
    choice: FrontierRow | None  # None: no row has a top-1 to compare
    message: str


@dataclass(frozen=True)
class Frontier:
    schema: str
    schema_version: int
    created: str  # UTC, ISO 8601
    device: DeviceInfo
    settings: BenchRequest
    bundles: dict[str, str]  # row bundle name -> the bundle folder measured
    rows: tuple[FrontierRow, ...]  # sorted by precision, then p50
    budget: BudgetPick | None  # None: no --budget-ms


def read_frontier(path: str | Path) -> Frontier:
    """frontier.json, strictly: a missing, unknown or mistyped key is one error naming the file and the key."""
    return read_record(path, Frontier, SCHEMA, SCHEMA_VERSION, FIX)


def write_frontier(path: str | Path, frontier: Frontier) -> None:
    write_json(Path(path), to_dict(frontier))
