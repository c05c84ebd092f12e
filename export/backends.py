"""The small interface every export backend implements, and the registry that orders them.

A backend reads what earlier backends wrote into the work folder (``job.dir``) and returns the
manifest entries of the artifacts it wrote. ``export.api`` runs the wanted backends in
registration order: FP32 ONNX first (everything else is derived from it), engines last.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from distill.errors import UserError
from export.evaluation import ImageBatches, Predictions
from export.options import ExportOptions


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
    ckpt: dict[str, Any]
    eval_batches: ImageBatches
    reference: Predictions  # PyTorch FP32 logits on eval_batches
    calibration_source: Any  # the training split (an image source)
    calibration_images: int  # how many to draw (checked against the minimum before any work)
    held_out: Selection | None = None  # where INT8 recipes are judged when it is not eval_batches (val)
    notes: dict[str, Any] = field(default_factory=dict)  # top-level manifest additions

    def judged_on(self) -> Selection:
        """Where remedies are judged: the validation split, so the reported test figure stays unbiased."""
        return self.held_out or Selection(self.options.eval_split, self.eval_batches, self.reference)

    @property
    def preprocessing(self) -> dict:
        return self.ckpt["preprocessing"]


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
