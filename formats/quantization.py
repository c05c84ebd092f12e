"""What makes an INT8 artifact INT8, and how it was made: the manifest's ``quantization`` record.

Written by export (calibrated graphs: the recipe and every attempt of the remedy ladder; graphs
trained by ``python -m export.qat``: ``qat``), read by anyone through ``formats.manifest``. Nested
records of the manifest: its ``schema_version`` versions them, and, as there, a field added while
it stayed at 1 is ``X | None`` (``None``: a bundle written before it) and says since when.
docs/bundle.md describes every field.
"""
from __future__ import annotations

from dataclasses import dataclass

from formats.accuracy import Selected


@dataclass(frozen=True)
class Saturation:
    """The U8S8 graph's worst int16 pair sum on x86 CPUs without VNNI (export.int8.safety)."""

    u8s8_ops: int
    worst_pair_sum: int  # 255 x the two largest |weight| of the worst output channel
    limit: int  # 32,767
    ops_over_limit: int
    first_over_limit: tuple[str, ...]  # the first few nodes over it
    safe_on_every_x86: bool


@dataclass(frozen=True)
class GraphCounts:
    """What the written graph holds, counted in the file (the INT8 label is checked on these)."""

    quantize_linear: int
    dequantize_linear: int
    int8_initializers: int
    int8_weighted_ops: int | None = None  # weighted ops reading INT8 weights; None: before 2026-11-27's review
    weighted_ops: int | None = None  # Conv/Gemm/MatMul with a weight; None: as above
    int32_dequantize: int | None = None  # DequantizeLinear of INT32 (quantized biases); None: as above
    saturation: Saturation | None = None  # the U8S8 graph only; None also before 2026-12-05


@dataclass(frozen=True)
class AttemptRow:
    """One recipe of the remedy ladder and its figures on the judged split."""

    method: str
    images: int  # calibration images
    excluded_nodes: tuple[str, ...]  # kept in float
    top1: float
    top1_drop: float
    agreement: float
    within_budget: bool


@dataclass(frozen=True)
class QatFigures:
    """A graph against the FP32 student on one split."""

    top1: float
    top1_drop: float  # points
    top1_drop_ci95: float  # points, paired 95% interval
    agreement: float
    kl: float  # mean KL(FP32 || INT8) per image: the criterion that chooses the QAT epoch


@dataclass(frozen=True)
class PtqVsQat:
    """Post-training and quantization-aware INT8 on the same images (test, else the selection images)."""

    split: str
    images: int
    fp32_top1: float
    ptq: QatFigures
    qat: QatFigures


@dataclass(frozen=True)
class QatSelection:
    """Where the QAT epoch was chosen: e.g. "val+train" (validation plus unaugmented training images)."""

    split: str
    images: int
    fp32_top1: float


@dataclass(frozen=True)
class QatSummary:
    """A graph trained by ``python -m export.qat``, as the bundle records it (qat.json holds the rest)."""

    folder: str  # the QAT folder it came from
    chosen_epoch: int  # 0: the post-training graph stayed the closest to FP32
    epochs: int  # epochs trained
    selected_on: QatSelection
    ptq_vs_qat: PtqVsQat


@dataclass(frozen=True)
class Quantization:
    """An INT8 artifact's format, recipe and graph."""

    activations: str  # "uint8" (U8S8, onnxruntime CPU) or "int8" (S8S8, TensorRT)
    weights: str  # "int8"
    per_channel: bool
    format: str  # "qdq"
    symmetric: bool  # the TensorRT flavour
    method: str  # calibration: "minmax", "entropy", "percentile"; "qat" for trained graphs
    calibration_images: int  # 0 for trained graphs
    excluded_nodes: tuple[str, ...]  # weighted nodes kept in float
    remedies_needed: int  # attempts after the first
    graph: GraphCounts
    calibration_split: str | None = None  # "train"; None for trained graphs
    attempts: tuple[AttemptRow, ...] | None = None  # calibrated graphs: every recipe tried, the chosen one last
    qat: QatSummary | None = None  # trained graphs
    selected_on: Selected | None = None  # None: written before 2026-11-27's review
    weight_range: tuple[int, ...] | None = None  # [-64, 64] (CPU, 7-bit) or [-127, 127]; None: before 2026-12-05
