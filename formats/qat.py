"""``qat.json``: what ``python -m export.qat`` trained, for ``python -m export --int8 --qat <folder>``.

Written beside the two trained INT8 graphs, last (its presence means the folder is complete); export
reads it before any work and refuses graphs of another checkpoint or files that changed. Strict both
ways (``formats.records``): every key written (null where a value is absent), every key required,
nothing unknown. Version 1 had no ``schema_version`` and kept the flavours in an object by file name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from formats.errors import UserError
from formats.files import write_json
from formats.manifest import SourceCheckpoint
from formats.quantization import GraphCounts, PtqVsQat, QatSelection
from formats.records import Scalar, read_record, to_dict

QAT_FILE = "qat.json"
QAT_SCHEMA = "vl2lite-edge/qat"
QAT_SCHEMA_VERSION = 2


@dataclass(frozen=True)
class EpochRow:
    """One epoch's graph on the selection images (epoch 0: the post-training graph)."""

    epoch: int
    top1: float
    top1_drop: float
    top1_drop_ci95: float
    agreement: float
    kl: float  # mean KL(FP32 || INT8) per image: the lowest one is kept
    loss: float | None  # mean training loss of the epoch; None for epoch 0


@dataclass(frozen=True)
class Fidelity:
    """The torch graph against the deployed one before training: top-1 agreement on ``images``."""

    agreement: float
    against: str  # "onnxruntime-cpu", or the Q/DQ reference semantics for the TensorRT graph
    images: int


@dataclass(frozen=True)
class QatFlavour:
    """One trained INT8 graph (U8S8 for onnxruntime, S8S8 for TensorRT)."""

    file: str  # "model.int8.onnx" or "model.int8.trt.onnx", beside qat.json
    target: str
    torch_vs_onnxruntime: Fidelity
    chosen_epoch: int
    epochs: tuple[EpochRow, ...]
    ptq_vs_qat: PtqVsQat
    graph: GraphCounts
    sha256: str  # of ``file``: export refuses a file that changed
    seconds: float


@dataclass(frozen=True)
class QatRecord:
    schema: str  # "vl2lite-edge/qat"
    schema_version: int
    created: str  # UTC, ISO 8601
    source_checkpoint: SourceCheckpoint
    settings: dict[str, Scalar]  # the QatSettings it ran with (paths as text)
    selected_on: QatSelection
    training_images: int
    flavours: tuple[QatFlavour, ...]

    def flavour(self, file: str) -> QatFlavour:
        for f in self.flavours:
            if f.file == file:
                return f
        raise UserError(f"{QAT_FILE} holds no graph {file!r} (it has {', '.join(f.file for f in self.flavours)})")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def read_qat_record(folder: Path, fix: str) -> QatRecord:
    """``folder/qat.json``, strictly; ``fix`` says how to write it again."""
    return read_record(Path(folder) / QAT_FILE, QatRecord, QAT_SCHEMA, QAT_SCHEMA_VERSION, fix)


def write_qat_record(folder: Path, record: QatRecord) -> None:
    write_json(Path(folder) / QAT_FILE, record.to_dict())
