"""``sweep.json`` of ``python -m pipeline sweep``, and the records that let a sweep reuse finished work.

    <out_dir>/<name>/sweep.json                       Sweep: every student's training, export and bench figures
    <out_dir>/<name>/bundles/<student>.made-by.json   MadeBy: which checkpoint and options made that bundle
    <run>/qat.made-by.json                            MadeBy: which checkpoint and options made <run>/qat

Frozen dataclasses, strict in both directions (``formats.records``): every field written, and a
missing (required), mistyped or unknown key is one error naming the file and the key. A failed stage is a
``Failure`` (the exception's type, the exit status the stage's command gives for it, its one
line), never a guessed figure. ``sweep.json`` is written after every student, so a killed sweep
keeps what it finished: ``wall_s`` is None until it ends.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from formats.errors import UserError
from formats.files import read_json_object, utc_now, write_json
from formats.frontier import BudgetPick
from formats.records import check_header, from_dict, read_record, to_dict

SCHEMA = "vl2lite-sweep"
MADE_BY_SCHEMA = "vl2lite-sweep-made-by"
SCHEMA_VERSION = 1
FIX = "run python -m pipeline sweep again (it rewrites sweep.json)"


@dataclass(frozen=True)
class Failure:
    """Why a stage gave no output for one student (the sweep goes on with the others)."""

    error: str  # the exception's type: "BudgetError" (an accuracy budget miss), "UserError", or a crash's type
    exit: int  # the exit status the stage's own command gives for it: 3 a budget miss, 2 a user error, 1 a crash
    reason: str  # its one line


@dataclass(frozen=True)
class ArtifactFigures:
    """One artifact of an exported bundle, as its manifest records it."""

    file: str  # e.g. "model.int8.onnx"
    precision: str  # "fp32", "fp16" or "int8"
    top1: float | None  # the export's test top-1 (None: not evaluated)
    within_budget: bool | None  # the export's accuracy verdict (None: not judged)


@dataclass(frozen=True)
class StageRun:
    """One student through one stage (export, or quantization-aware training)."""

    command: str  # the same work as one command line: to redo it by hand, or on a device
    output: str | None  # the bundle or QAT folder it wrote; None when it failed
    seconds: float  # 0 when reused
    reused: bool  # an earlier output of this very checkpoint and these options was kept
    failure: Failure | None = None  # None: it worked
    artifacts: tuple[ArtifactFigures, ...] = ()  # an export's manifest entries

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class StudentRow:
    student: str  # the student.arch
    run: str  # its training run folder (best.pt inside)
    test_top1: float  # the trained student's test top-1 (PyTorch)
    train_s: float  # training wall time (a reused run: the time it took then)
    export: StageRun  # the bundle the benchmark measures
    export_ptq: StageRun | None = None  # --qat after a post-training INT8 miss: that first export
    qat: StageRun | None = None  # --qat after a post-training INT8 miss: the quantization-aware training


@dataclass(frozen=True)
class BenchRun:
    command: str  # python -m runtime.bench ...: the same measurement, e.g. on a device with copied bundles
    result: str | None  # its frontier.json (several bundles) or bench.json (one); None when it failed
    failure: Failure | None = None
    pick: BudgetPick | None = None  # with --budget-ms: the benchmark's choice within it


@dataclass(frozen=True)
class Sweep:
    schema: str  # "vl2lite-sweep"
    schema_version: int  # 1
    created: str  # UTC, ISO 8601
    students: tuple[StudentRow, ...]
    cache_build_s: float  # building the shared teacher cache (0: it was there)
    train_export_s: float | None = None  # training and exporting every student; None while the sweep runs
    bench: BenchRun | None = None  # None: --no-bench, no bundle, or still running
    wall_s: float | None = None  # None while the sweep runs

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Sweep":
        check_header(d, SCHEMA, SCHEMA_VERSION, where, FIX)
        return from_dict(cls, d, where, FIX)

    @classmethod
    def read(cls, path: Path) -> "Sweep":
        return cls.from_dict(read_json_object(path, FIX), str(path))

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def write(self, path: Path) -> None:
        write_json(path, self.to_dict())


def new_sweep(students: tuple[StudentRow, ...], cache_build_s: float) -> Sweep:
    return Sweep(SCHEMA, SCHEMA_VERSION, utc_now(), students, cache_build_s)


@dataclass(frozen=True)
class MadeBy:
    """What made a stage's output folder, written beside it once the stage has finished."""

    schema: str  # "vl2lite-sweep-made-by"
    schema_version: int  # 1
    checkpoint_sha256: str
    options: str  # the stage's options as one command-line string, e.g. "--int8 --best-effort"


def made_by(checkpoint_sha256: str, options: str) -> MadeBy:
    return MadeBy(MADE_BY_SCHEMA, SCHEMA_VERSION, checkpoint_sha256, options)


def read_made_by(path: Path) -> MadeBy | None:
    """The record at ``path``; None when there is none or it cannot be read (then the work is redone:
    an unreadable record never vouches for an output)."""
    if not Path(path).is_file():
        return None
    try:
        return read_record(path, MadeBy, MADE_BY_SCHEMA, SCHEMA_VERSION, FIX)
    except UserError:
        return None


def write_made_by(path: Path, record: MadeBy) -> None:
    write_json(path, to_dict(record))
