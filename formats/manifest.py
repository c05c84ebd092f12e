"""``manifest.json`` of a bundle (docs/bundle.md): frozen dataclasses, strict in both directions.

export builds a ``Manifest`` and writes ``to_dict()``; the runtime reads ``Manifest.from_dict``.
Every field is typed; a missing field, a field of the wrong type or an unknown field is one error
naming it. Fields that bundles of schema version 1 written before them lack are ``X | None`` and
say so in their comment: ``None`` means "absent", never a guessed value.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from formats.errors import UserError
from formats.schema import typed as schema_typed

SCHEMA = "vl2lite-bundle"
SCHEMA_VERSION = 1
FORMATS = ("onnx", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
TARGETS = ("any", "onnxruntime-cpu", "gpu", "tensorrt")


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
    budget: dict[str, Any] | None = None  # the verdict of formats.bundle.Budget; None: written before verdicts
    parity: dict[str, Any] | None = None  # ONNX vs PyTorch logits on the first images (ONNX and engines)
    quantization: dict[str, Any] | None = None  # INT8 only: recipe, graph counts, attempts
    evaluated_with: str | None = None  # where the figures came from, when not the artifact's own target
    # where top1 / top1_drop / agreement were measured: {"isa", "cpu", "machine", "engine"} (formats.isa), plus
    # {"gpu", "compute_capability"} for engines; None: a bundle written before provenance ("measured on: unknown")
    measured_on: dict[str, Any] | None = None
    sidecar: str | None = None  # engines only: the build environment JSON
    source: str | None = None  # engines only: the ONNX file the engine was built from

    def __post_init__(self) -> None:
        for name, allowed in (("format", FORMATS), ("precision", PRECISIONS), ("target", TARGETS)):
            if getattr(self, name) not in allowed:
                raise UserError(f"artifact {self.file}: {name} {getattr(self, name)!r} is not one of "
                                f"{', '.join(allowed)}")


@dataclass(frozen=True)
class Manifest:
    """The bundle's table of contents, written last (its presence means the bundle is complete)."""

    schema: str  # "vl2lite-bundle"
    schema_version: int  # 1
    created: str  # UTC, ISO 8601
    name: str
    arch: str  # the student architecture
    num_classes: int
    input: dict[str, Any]  # {"name", "shape": [-1, 3, H, W], "dtype": "float32"}
    output: dict[str, Any]  # {"name", "shape": [-1, C], "dtype": "float32"}
    max_batch: int  # largest batch any artifact takes
    labels: str  # "labels.txt"
    preprocessing: str  # "preprocessing.json"
    artifacts: tuple[ArtifactEntry, ...]
    files: dict[str, str]  # relative path -> sha256 of every file but the manifest
    batch: dict[str, int] | None = None  # {"min", "opt", "max"}: the dynamic-batch limits
    source_checkpoint: dict[str, Any] | None = None  # {"file", "sha256", "epoch"}
    reference: dict[str, Any] | None = None  # the PyTorch student: {"framework", "top1", "split", "images"}
    budget: dict[str, float] | None = None  # {"max_top1_drop", "min_agreement"} every artifact was held to
    versions: dict[str, str] | None = None  # the tools that wrote the bundle
    options: dict[str, Any] | None = None  # the resolved export options
    tensorrt: str | None = None  # the TensorRT version that built engines, or "not installed" (--best-effort)
    triton: dict[str, Any] | None = None  # --triton: {"repository", "models"}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Manifest":
        if not isinstance(d, dict):
            raise UserError(f"{where} must hold a JSON object")
        if d.get("schema") != SCHEMA:
            raise UserError(f"{where} is not a bundle manifest (schema {SCHEMA!r}): pass a bundle folder")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise UserError(f"{where} has schema version {d.get('schema_version')}, this toolkit reads "
                            f"{SCHEMA_VERSION}: install the matching runtime or re-export the bundle")
        return typed(cls, d, where)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None} | {
            "artifacts": [{k: v for k, v in dataclasses.asdict(a).items() if v is not None} for a in self.artifacts]}


# Keys older schema-1 bundles carry that are now elsewhere: read and dropped, never an error.
LEGACY_KEYS = {ArtifactEntry: frozenset({"within_budget"})}


def typed(cls: type, d: Any, where: str) -> Any:
    """``cls(**d)`` checked field by field (``formats.schema``), older bundles' legacy keys dropped."""
    return schema_typed(cls, d, where, LEGACY_KEYS, "re-export the bundle")
