"""The small interface every export backend implements, and the registry that orders them.

A backend reads what earlier backends wrote into the work folder (``job.dir``) and returns the
manifest entries of the artifacts it wrote. ``export.api`` runs the wanted backends in
registration order: FP32 ONNX first (everything else is derived from it), engines last.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from export.evaluation import ImageBatches, Predictions, Runner, accuracy_entry, predict
from export.options import ExportOptions
from formats.bundle import Budget
from formats.checkpoint import StudentMeta
from formats.errors import UserError


@dataclass(frozen=True)
class Selection:
    """A split, its evaluation batches and the PyTorch student's predictions on them."""

    split: str
    batches: ImageBatches
    reference: Predictions


@dataclass
class ExportJob:
    """Everything a backend may read: the student, its data, the reference predictions."""

    options: ExportOptions
    dir: Path  # the temporary bundle folder being filled
    student: torch.nn.Module
    meta: StudentMeta
    eval_batches: ImageBatches
    reference: Predictions  # PyTorch FP32 logits on eval_batches
    calibration_source: Any  # the training split (an image source)
    calibration_images: int  # how many to draw (checked against the minimum before any work)
    held_out: Selection | None = None  # where INT8 recipes are judged when it is not eval_batches (val)
    tensorrt: str | None = None  # the TensorRT version that built engines, or "not installed"
    qat: Any = None  # export.qat.QatGraphs: trained INT8 graphs to publish instead of calibrating

    def judged_on(self) -> Selection:
        """Where the budget is judged: the validation split, so the reported test figure stays unbiased."""
        return self.held_out or Selection(self.options.eval_split, self.eval_batches, self.reference)

    @property
    def preprocessing(self) -> dict:
        return self.meta.preprocessing.to_dict()

    @property
    def budget(self) -> Budget:
        return Budget(self.options.max_top1_drop, self.options.min_agreement)

    def verdict(self, run: Runner, on_eval: Predictions) -> dict[str, Any]:
        """The budget verdict of an artifact (``run``), whose evaluation-split predictions are ``on_eval``."""
        judged = self.judged_on()
        pred = on_eval if self.held_out is None else predict(run, judged.batches)
        acc = accuracy_entry(pred, judged.reference)
        return self.budget.verdict(judged.split, judged.batches.images, acc["top1_drop"], acc["agreement"])


class BudgetError(UserError):
    """An artifact missed the accuracy budget; ``table`` shows the attempts or the verdicts."""

    def __init__(self, message: str, table: str) -> None:
        super().__init__(message)
        self.table = table


def enforce_budget(artifacts: list[dict[str, Any]], options: ExportOptions) -> None:
    """The one outcome of a miss: no bundle (exit 3), unless --best-effort keeps it, marked, with a warning."""
    over = [a for a in artifacts if not a["budget"]["within_budget"]]
    if not over:
        return
    names = ", ".join(a["file"] for a in over)
    if options.best_effort:
        log(f"WARNING: {names} missed the accuracy budget; --best-effort keeps them, marked within_budget: false "
            f"(runtime predict and serve skip them unless named with --artifact)")
        return
    raise BudgetError(f"{names} missed the accuracy budget (max top-1 drop {options.max_top1_drop:g} points"
                      f"{f', min agreement {options.min_agreement:g}' if options.min_agreement else ''}); "
                      f"no bundle was written: raise --max-top1-drop, leave that precision out, or pass "
                      f"--best-effort to keep it marked", verdict_table(artifacts, options))


def verdict_table(artifacts: list[dict[str, Any]], options: ExportOptions) -> str:
    agreement = f", agreement >= {options.min_agreement:g}" if options.min_agreement else ""
    lines = [f"accuracy budget: top-1 drop <= {options.max_top1_drop:g} points{agreement}",
             "| artifact | judged on | images | drop (pts) | agreement | within budget |", "|---|---|---|---|---|---|"]
    for a in artifacts:
        v = a["budget"]
        lines.append(f"| {a['file']} | {v['split']} | {v['images']} | {v['top1_drop']:+.2f} | {v['agreement']:.3f} | "
                     f"{'yes' if v['within_budget'] else 'no'} |")
    return "\n".join(lines)


class Backend(Protocol):
    name: str

    def wanted(self, options: ExportOptions) -> bool: ...

    def build(self, job: ExportJob) -> list[dict[str, Any]]: ...


_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    if backend.name in _REGISTRY:
        raise ValueError(f"export backend {backend.name!r} is already registered")
    _REGISTRY[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    if name not in _REGISTRY:
        raise UserError(f"unknown export backend {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def list_backends() -> list[str]:
    return list(_REGISTRY)


def log(message: str) -> None:
    """Progress and warnings go to stderr so stdout carries only the bundle path."""
    print(message, file=sys.stderr, flush=True)
