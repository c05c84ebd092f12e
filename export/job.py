"""The small interface every export backend implements: what it may read (``ExportJob``), what it
declares (``Backend``) and what it returns (``Built``).

A backend module in ``export/backends/`` declares ``BACKEND = Backend(...)``: its name (also its
command-line flag, ``--<name>``, unless it is always built), the flag's help, its place in the
build order, and ``build(job)``, which writes its files into ``job.dir`` (reading what backends
earlier in the order wrote there) and returns their manifest entries. ``export.registry`` finds
the modules; ``export.api`` runs the wanted backends in their declared order.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from export.evaluation import ImageBatches, Predictions, Runner, accuracy_entry, predict
from export.settings import ExportOptions
from formats.accuracy import Budget, BudgetVerdict
from formats.checkpoint import StudentMeta
from formats.datasets import DatasetSplits, ImageSource
from formats.files import sha256_file
from formats.manifest import ArtifactEntry
from formats.progress import Step


@dataclass(frozen=True)
class Selection:
    """A split, its evaluation batches and the PyTorch student's predictions on them."""

    split: str
    batches: ImageBatches
    reference: Predictions


@dataclass
class ExportJob:
    """Everything a backend may read: the student, its data, the reference predictions, earlier artifacts."""

    options: ExportOptions
    dir: Path  # the temporary bundle folder being filled
    name: str  # the bundle's name
    checkpoint: Path  # the exported checkpoint (a QAT folder must belong to it)
    student: torch.nn.Module
    meta: StudentMeta
    eval_batches: ImageBatches
    reference: Predictions  # PyTorch FP32 logits on eval_batches
    calibration_source: ImageSource  # the training split
    held_out: Selection | None = None  # where INT8 recipes are judged when it is not eval_batches (val)
    artifacts: list[ArtifactEntry] = field(default_factory=list)  # what the backends before this one built

    def judged_on(self) -> Selection:
        """Where the budget is judged: the validation split, so the reported test figure stays unbiased."""
        return self.held_out or Selection(self.options.eval_split, self.eval_batches, self.reference)

    @property
    def preprocessing(self) -> dict:
        return self.meta.preprocessing.to_dict()

    @property
    def budget(self) -> Budget:
        return Budget(self.options.max_top1_drop, self.options.min_agreement)

    @property
    def images_per_artifact(self) -> int:
        """Images an artifact is run on: the evaluation split, plus the judged split where that differs."""
        return self.eval_batches.images + (self.held_out.batches.images if self.held_out is not None else 0)

    def verdict(self, run: Runner, on_eval: Predictions, step: Step | None = None) -> BudgetVerdict:
        """The budget verdict of an artifact (``run``), whose evaluation-split predictions are ``on_eval``."""
        judged = self.judged_on()
        pred = on_eval if self.held_out is None else predict(run, judged.batches, step)
        acc = accuracy_entry(pred, judged.reference)
        return self.budget.verdict(judged.split, judged.batches.images, acc["top1_drop"], acc["agreement"])

    def entry(self, file: str, format: str, precision: str, target: str, accuracy: Mapping[str, float],
              **fields: Any) -> ArtifactEntry:
        """The manifest entry of ``file`` (written, final): its checksum, size and evaluation figures."""
        path = self.dir / file
        return ArtifactEntry(file=file, format=format, precision=precision, target=target, sha256=sha256_file(path),
                             size_bytes=path.stat().st_size, top1=accuracy["top1"], top1_drop=accuracy["top1_drop"],
                             agreement=accuracy["agreement"], top1_drop_ci95=accuracy["top1_drop_ci95"], **fields)


@dataclass(frozen=True)
class Built:
    """What a backend added to the bundle."""

    artifacts: tuple[ArtifactEntry, ...] = ()  # one entry per model file, each held to the accuracy budget
    manifest: Mapping[str, Any] = field(default_factory=dict)  # top-level Manifest fields it fills (tensorrt, triton)


@dataclass(frozen=True)
class Backend:
    """One export backend, as its module declares it (``BACKEND = Backend(...)``)."""

    name: str  # unique; the command-line flag --<name> and ExportOptions.backends entry that ask for it
    order: int  # build order, lowest first: FP32 ONNX 0 (every other artifact derives from it), repositories last
    build: Callable[[ExportJob], Built]
    help: str = ""  # the flag's help
    always: bool = False  # built in every export (FP32 ONNX): no flag
    wanted: Callable[[ExportOptions], bool] | None = None  # when it runs; default: asked for by name
    check: Callable[[ExportOptions, Path, DatasetSplits], None] | None = None  # before any work: refuse early

    def is_wanted(self, options: ExportOptions) -> bool:
        if self.wanted is not None:
            return self.wanted(options)
        return self.always or options.wants(self.name)


def log(message: str) -> None:
    """Progress and warnings go to stderr so stdout carries only the bundle path."""
    print(message, file=sys.stderr, flush=True)
