"""The student checkpoint's metadata: what export and the runtime may rely on, checked before any work.

A checkpoint (``best.pt``/``last.pt``, schema ``vl2lite-student`` version 1) is a dict of plain types
and tensors that ``torch.load(weights_only=True)`` reads; this module checks everything in it but
the tensors, torch-free::

    schema, schema_version      "vl2lite-student", 1
    arch                        registered student name, e.g. "resnet18"
    num_classes, class_names    C and the C names in label order
    feature_dim                 d, the width of the student's features
    state_dict                  the student's weights (checked against the architecture by torch code)
    preprocessing               formats.preprocessing.PreprocessSpec as a dict
    dataset                     formats.datasets.DatasetSpec as a dict (older checkpoints: config.data)
    config                      the resolved run config (nested dict; export never reads it)
    metrics                     formats.run_results.StudentMetrics: {"val": {...}, "test": {...}}
    epoch                       epoch whose weights these are
    versions                    library versions that produced it
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from formats.datasets import DatasetSpec
from formats.errors import UserError
from formats.preprocessing import PreprocessSpec
from formats.run_results import StudentMetrics, student_metrics

SCHEMA = "vl2lite-student"
SCHEMA_VERSION = 1
RETRAIN = "pass the best.pt or last.pt written by `python -m distill`, or re-run training"


@dataclass(frozen=True)
class StudentMeta:
    """Everything of a checkpoint but its tensors, typed and checked."""

    arch: str
    num_classes: int
    class_names: tuple[str, ...]
    feature_dim: int
    preprocessing: PreprocessSpec
    dataset: DatasetSpec
    epoch: int
    metrics: StudentMetrics

    @classmethod
    def from_checkpoint(cls, ckpt: Any, where: str) -> "StudentMeta":
        """Check a loaded checkpoint dict; any problem is one UserError naming the field."""
        if not isinstance(ckpt, dict) or ckpt.get("schema") != SCHEMA:
            raise UserError(f"{where} is not a student artifact (schema {SCHEMA!r}): {RETRAIN}")
        if ckpt.get("schema_version") != SCHEMA_VERSION:
            raise UserError(f"{where} has schema version {ckpt.get('schema_version')}, this toolkit reads "
                            f"{SCHEMA_VERSION}: re-run distill or use the matching toolkit version")
        field = _Fields(ckpt, where)
        names = field.get("class_names", list)
        if not names or not all(isinstance(n, str) for n in names):
            raise UserError(f"{where}: class_names must be a non-empty list of strings: {RETRAIN}")
        num_classes = field.get("num_classes", int)
        if num_classes != len(names):
            raise UserError(f"{where}: num_classes is {num_classes} but class_names has {len(names)} names: {RETRAIN}")
        field.get("state_dict", dict)
        data = ckpt["dataset"] if "dataset" in ckpt else field.get("config", dict).get("data")
        if not isinstance(data, dict):
            raise UserError(f"{where} lacks dataset (and config.data): {RETRAIN}")
        return cls(arch=field.get("arch", str), num_classes=num_classes, class_names=tuple(names),
                   feature_dim=field.get("feature_dim", int),
                   preprocessing=_preprocessing(field.get("preprocessing", dict), where),
                   dataset=DatasetSpec.from_dict(data, where), epoch=field.get("epoch", int),
                   metrics=student_metrics(field.get("metrics", dict), where))

    @property
    def input_size(self) -> tuple[int, int]:
        return self.preprocessing.input_size


# No student input is larger: 4096 x 4096 x 3 float32 is already 200 MB per image. A larger size is a damaged
# or hostile checkpoint, refused before Pillow allocates it (input_size 100000 would take ~30 GB per image).
MAX_SIDE = 4096


def _preprocessing(d: dict[str, Any], where: str) -> PreprocessSpec:
    try:
        spec = PreprocessSpec.from_dict(d)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    if max(*spec.input_size, spec.resize_size) > MAX_SIDE:
        raise UserError(f"{where}: preprocessing asks for input_size {list(spec.input_size)} and resize_size "
                        f"{spec.resize_size}, beyond {MAX_SIDE} pixels a side: the checkpoint is damaged; {RETRAIN}")
    return spec


class _Fields:
    """Typed field access with one error per missing or mistyped field."""

    def __init__(self, ckpt: dict[str, Any], where: str) -> None:
        self.ckpt, self.where = ckpt, where

    def get(self, key: str, kind: type) -> Any:
        if key not in self.ckpt:
            raise UserError(f"{self.where} lacks {key!r}: {RETRAIN}")
        value = self.ckpt[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UserError(f"{self.where}: {key!r} must be {kind.__name__}, not {type(value).__name__}: {RETRAIN}")
        return value
