"""What a training run reports: ``results.json``, ``compare_run.json`` and the checkpoint's metrics.

``python -m distill`` writes ``<run>/results.json`` (schema ``vl2lite-edge/run-results``): the
teacher's diagnostics before epoch 1, then the selected epoch and the student's validation and
test metrics. ``distill compare`` and ``python -m pipeline sweep`` record each finished run in
``<run>/compare_run.json`` (``vl2lite-edge/compare-run``), which a later comparison or sweep reads
back to reuse the run. Both are strict both ways (``formats.records``): every key written, every
key required, nothing unknown. The checkpoint holds the same split metrics (``StudentMetrics``),
read by ``formats.checkpoint``.

A ``results.json`` or ``compare_run.json`` written before its schema existed (no ``schema`` key,
the same fields) is read as version 1: finished runs stay reusable.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from formats.errors import UserError
from formats.files import read_json_object, write_json
from formats.records import Scalar, check_header, from_dict, to_dict

RESULTS_FILE = "results.json"
RESULTS_SCHEMA = "vl2lite-edge/run-results"
RUN_RECORD_FILE = "compare_run.json"
RUN_RECORD_SCHEMA = "vl2lite-edge/compare-run"
SCHEMA_VERSION = 1
RETRAIN = "it is written by python -m distill: train the run again (or delete the run folder)"

# The resolved run config as JSON (distill.config_parse.to_dict): sections of keys, a value a scalar or a list
ConfigTable = dict[str, dict[str, Scalar | tuple[str | int | float, ...]]]


@dataclass(frozen=True)
class SplitMetrics:
    """The student on one split (distill.evaluate); without labels, also beside the teacher's zero-shot."""

    top1: float
    top5: float
    loss: float  # mean cross-entropy
    images: int
    teacher_zero_shot_top1: float | None = None  # data.labels=none: the teacher on the same images
    agreement_with_teacher: float | None = None
    teacher_balanced_zero_shot_top1: float | None = None  # ... with its class prior balanced over the pool
    agreement_with_balanced_teacher: float | None = None


@dataclass(frozen=True)
class StudentMetrics:
    """The checkpoint's ``metrics``: validation at its epoch, test once training has finished."""

    val: SplitMetrics | None = None
    test: SplitMetrics | None = None


@dataclass(frozen=True)
class CalibrationCandidate:
    strength: float | None  # None: the prompts' anchors as they are
    val_top1: float
    val_loss: float


@dataclass(frozen=True)
class TeacherDiagnostics:
    """The teacher's own numbers on the validation split (distill.calibrate.diagnostics)."""

    val_images: int
    chance: float
    zero_shot_val_top1: float
    calibrated_val_top1: float
    linear_probe_val_top1: float
    linear_probe_weight_decay: float
    anchors: str  # "text" or "calibrated": what the run distils
    calibration_strength: float | None
    calibration_candidates: tuple[CalibrationCandidate, ...]
    calibration_reason: str
    warnings: tuple[str, ...]
    balanced_zero_shot_val_top1: float | None = None  # data.labels=none only


@dataclass(frozen=True)
class PoolSummary:
    """The unlabeled pool a run trained on, after the leakage check."""

    images: int
    listed: int
    dropped_val_test_copies: int
    labels: str  # data.labels: "given" or "none"


@dataclass(frozen=True)
class RunResults:
    """``results.json``. Before epoch 1 only ``teacher`` (and ``unlabeled``) is known; a finished run has
    every field but ``teacher`` (None for the teacher-off baseline) and ``unlabeled`` (None without a pool)."""

    teacher: TeacherDiagnostics | None
    unlabeled: PoolSummary | None = None
    best_epoch: int | None = None  # the selected epoch (train.select)
    val: SplitMetrics | None = None
    test: SplitMetrics | None = None
    schema: str = RESULTS_SCHEMA
    schema_version: int = SCHEMA_VERSION

    @property
    def finished(self) -> bool:
        return self.test is not None

    def write(self, path: Path) -> None:
        write_json(path, to_dict(self))


@dataclass(frozen=True)
class RunRecord:
    """``compare_run.json``: a finished run of one arm and seed, and the config it ran with."""

    arm: str
    seed: int
    run: str  # the run folder
    test_top1: float
    val_top1: float
    best_epoch: int
    wall_s: float  # training and evaluation, without the teacher cache
    resumed: bool
    epoch_s: float  # median seconds per epoch
    teacher: TeacherDiagnostics | None
    config: ConfigTable
    schema: str = RUN_RECORD_SCHEMA
    schema_version: int = SCHEMA_VERSION

    def write(self, path: Path) -> None:
        write_json(path, to_dict(self))

    def plain_config(self) -> dict[str, Any]:
        """The config as distill.config_parse.to_dict writes it (lists, not tuples)."""
        return to_dict(self.config)


def read_results(run_dir: Path) -> RunResults:
    """``<run_dir>/results.json``, strictly."""
    return _read(Path(run_dir) / RESULTS_FILE, RunResults, RESULTS_SCHEMA)


def read_run_record(run_dir: Path) -> RunRecord:
    """``<run_dir>/compare_run.json``, strictly."""
    return _read(Path(run_dir) / RUN_RECORD_FILE, RunRecord, RUN_RECORD_SCHEMA)


def _read(path: Path, cls: type, schema: str) -> Any:
    """A file written before its schema existed (no ``schema`` key, the same fields) is read as version 1."""
    d = read_json_object(path, RETRAIN)
    if "schema" not in d:
        d = {**d, "schema": schema, "schema_version": SCHEMA_VERSION}
    check_header(d, schema, SCHEMA_VERSION, str(path), RETRAIN)
    return from_dict(cls, d, str(path), RETRAIN)


def run_record(**fields: Any) -> RunRecord:
    """A ``RunRecord`` from plain values (the config as distill writes it), checked as a reader checks it."""
    return from_dict(RunRecord, to_dict(fields), RUN_RECORD_FILE, RETRAIN)


def student_metrics(d: Any, where: str) -> StudentMetrics:
    """A checkpoint's ``metrics`` object, strictly."""
    if not isinstance(d, dict):
        raise UserError(f"{where}: metrics must be a JSON object, not {type(d).__name__}: {RETRAIN}")
    return from_dict(StudentMetrics, d, f"{where}: metrics", RETRAIN)
