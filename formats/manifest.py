"""``manifest.json`` of a bundle (docs/bundle.md): frozen dataclasses, strict in both directions.

export builds a ``Manifest`` and writes ``to_dict()``; the runtime reads ``Manifest.from_dict``.
Every field is typed, nested records too (``formats.accuracy``, ``formats.quantization``); a
missing field, a field of the wrong type or an unknown field is one error naming it. Fields that
bundles of schema version 1 written before them lack are ``X | None`` and say so in their
comment: ``None`` means "absent", never a guessed value, and ``to_dict`` leaves it out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from formats.accuracy import Budget, BudgetVerdict, Parity
from formats.errors import UserError
from formats.quantization import Quantization
from formats.records import Scalar, check_header, from_dict, plain

SCHEMA = "vl2lite-bundle"
SCHEMA_VERSION = 1
FORMATS = ("onnx", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
TARGETS = ("any", "onnxruntime-cpu", "gpu", "tensorrt")
FIX = "re-export the bundle"


@dataclass(frozen=True)
class TensorSpec:
    """The model's input or output: ``shape`` with -1 for the dynamic batch axis."""

    name: str
    shape: tuple[int, ...]  # input [-1, 3, H, W], output [-1, C]
    dtype: str  # "float32"


@dataclass(frozen=True)
class BatchLimits:
    """The dynamic-batch limits (TensorRT profile; Triton's max_batch_size is ``max``)."""

    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class SourceCheckpoint:
    """The checkpoint a file was made from."""

    file: str
    sha256: str
    epoch: int | None = None  # the bundle records it; qat.json does not


@dataclass(frozen=True)
class Reference:
    """The PyTorch student's figure every ``top1_drop`` is measured against."""

    framework: str  # "pytorch"
    top1: float
    split: str
    images: int


@dataclass(frozen=True)
class TritonRepository:
    """``--triton``: the model repository folder inside the bundle and its models, one per artifact."""

    repository: str  # "triton"
    models: tuple[str, ...]


@dataclass(frozen=True)
class ArtifactEntry:
    """One model file of the bundle."""

    file: str  # path inside the bundle, e.g. "model.int8.onnx"
    format: str  # "onnx" or "tensorrt"
    precision: str  # "fp32", "fp16" or "int8"
    target: str  # "any", "onnxruntime-cpu", "gpu" (FP16) or "tensorrt"
    sha256: str
    size_bytes: int
    top1: float  # on reference.split, a fraction
    top1_drop: float  # percentage points below reference.top1
    agreement: float  # fraction of images whose top-1 equals PyTorch's
    top1_drop_ci95: float | None = None  # points: top1_drop is known to +- this (95%, paired); None: older bundles
    budget: BudgetVerdict | None = None  # the verdict of formats.accuracy.Budget; None: written before verdicts
    parity: Parity | None = None  # ONNX vs PyTorch logits on the first images (ONNX and engines)
    quantization: Quantization | None = None  # INT8 only: recipe, graph counts, attempts
    evaluated_with: str | None = None  # where the figures came from, when not the artifact's own target
    # where top1 / top1_drop / agreement were measured: {"isa", "cpu", "machine", "engine"} (formats.isa), plus
    # {"gpu", "compute_capability"} for engines; None: a bundle written before provenance ("measured on: unknown")
    measured_on: dict[str, str] | None = None
    sidecar: str | None = None  # engines only: the build environment JSON
    source: str | None = None  # engines only: the ONNX file the engine was built from

    def __post_init__(self) -> None:
        for name, allowed in (("format", FORMATS), ("precision", PRECISIONS), ("target", TARGETS)):
            if getattr(self, name) not in allowed:
                raise UserError(f"artifact {self.file}: {name} {getattr(self, name)!r} is not one of "
                                f"{', '.join(allowed)}")

    @property
    def within_budget(self) -> bool | None:
        """The accuracy verdict; None: a bundle written before verdicts."""
        return None if self.budget is None else self.budget.within_budget


@dataclass(frozen=True)
class Manifest:
    """The bundle's table of contents, written last (its presence means the bundle is complete)."""

    schema: str  # "vl2lite-bundle"
    schema_version: int  # 1
    created: str  # UTC, ISO 8601
    name: str
    arch: str  # the student architecture
    num_classes: int
    input: TensorSpec
    output: TensorSpec
    max_batch: int  # largest batch any artifact takes
    labels: str  # "labels.txt"
    preprocessing: str  # "preprocessing.json"
    artifacts: tuple[ArtifactEntry, ...]
    files: dict[str, str]  # relative path -> sha256 of every file but the manifest
    batch: BatchLimits | None = None
    source_checkpoint: SourceCheckpoint | None = None
    reference: Reference | None = None
    budget: Budget | None = None  # the rule every artifact was held to
    versions: dict[str, str] | None = None  # the tools that wrote the bundle
    options: dict[str, Scalar | list[str]] | None = None  # the resolved export options
    tensorrt: str | None = None  # the TensorRT version that built engines, or "not installed" (--best-effort)
    triton: TritonRepository | None = None  # --triton

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Manifest":
        check_header(d, SCHEMA, SCHEMA_VERSION, where, "pass a bundle folder written by python -m export; for "
                     "another schema version, install the matching runtime or re-export the bundle")
        return from_dict(cls, d, where, FIX, LEGACY_KEYS)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, absent (None) fields left out."""
        return plain(self)


# Keys older schema-1 bundles carry that are now elsewhere: read and dropped, never an error.
LEGACY_KEYS = {ArtifactEntry: frozenset({"within_budget"})}
