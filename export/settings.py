"""The export stage's settings: frozen dataclasses, range-checked on construction.

``ExportOptions``: what ``python -m export`` builds (``backends``, the registered export backends
asked for: ``--int8``, ``--fp16``, ``--trt``, ``--triton``, ...) and how (``ExportSettings``, shared
by every backend). ``QatSettings``: ``python -m export.qat``. The command lines are generated from
these fields (``formats.cli``; the help of an option is the comment after its field).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from formats.errors import UserError

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
EVAL_SPLITS = ("test", "val")
RECOMMENDED_CALIBRATION_IMAGES = 300  # fewer draws a warning (too few images under-sample the ranges)


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise UserError(f"--{key} {message}")


@dataclass(frozen=True)
class ExportSettings:
    """How to export and how strictly to check it, for every backend."""

    calib_images: int = 300  # calibration images drawn from the training split (seeded)
    calib_method: str = "minmax"  # first method tried: minmax | entropy | percentile
    min_calib_images: int = 16  # fewer available training images is an error
    max_top1_drop: float = 1.0  # accuracy budget: top-1 points an artifact may lose vs PyTorch
    min_agreement: float = 0.0  # optional budget part: fraction of images whose top-1 must equal PyTorch's
    remedies: bool = True  # when INT8 misses the budget, try other recipes before failing
    max_excluded: int = 6  # most nodes the remedies may keep in float
    eval_split: str = "test"  # split every artifact is evaluated on: test | val
    eval_images: int = 0  # evaluate on the first N images of the split (0: all)
    parity_images: int = 64  # images for the ONNX vs PyTorch logit comparison
    min_batch: int = 1  # dynamic batch limits (TensorRT profile, Triton max_batch_size)
    opt_batch: int = 8
    max_batch: int = 32
    opset: int = 17
    workspace_gib: float = 2.0  # TensorRT builder workspace limit
    batch_size: int = 32  # batch size for calibration and evaluation
    data_root: str | None = None  # where the dataset lives, if not where training found it
    name: str | None = None  # bundle name (default: the output folder's name)
    overwrite: bool = False  # replace an existing bundle folder (atomically)
    best_effort: bool = False  # keep artifacts that miss the budget (marked) and --trt without TensorRT (none built)
    seed: int = 0  # calibration sample
    qat: str | None = None  # folder written by `python -m export.qat`: its trained INT8 graphs, no calibration (needs --int8)
    triton_queue_delay_us: int = 100
    verbose: bool = False  # show the libraries' own output (onnxruntime's calibration, torch.onnx warnings); or VL2LITE_VERBOSE=1

    def __post_init__(self) -> None:
        _check(self.calib_method in CALIBRATION_METHODS, "calib-method",
               f"must be one of {', '.join(CALIBRATION_METHODS)} (got {self.calib_method!r})")
        _check(self.eval_split in EVAL_SPLITS, "eval-split", f"must be test or val (got {self.eval_split!r})")
        _check(self.min_calib_images >= 1, "min-calib-images", "must be >= 1")
        _check(self.calib_images >= self.min_calib_images, "calib-images",
               f"must be >= --min-calib-images ({self.min_calib_images})")
        _check(0.0 <= self.max_top1_drop <= 100.0, "max-top1-drop", "must be in [0, 100] percentage points")
        _check(0.0 <= self.min_agreement <= 1.0, "min-agreement", "must be in [0, 1]")
        _check(self.max_excluded >= 0, "max-excluded", "must be >= 0")
        _check(self.eval_images >= 0, "eval-images", "must be >= 0 (0 means the whole split)")
        _check(self.parity_images >= 1, "parity-images", "must be >= 1")
        _check(1 <= self.min_batch <= self.opt_batch <= self.max_batch, "max-batch",
               f"needs 1 <= min_batch <= opt_batch <= max_batch (got {self.min_batch}, "
               f"{self.opt_batch}, {self.max_batch})")
        _check(13 <= self.opset <= 21, "opset", "must be in [13, 21]")
        _check(self.workspace_gib > 0, "workspace-gib", "must be > 0")
        _check(self.batch_size >= 1, "batch-size", "must be >= 1")
        _check(self.triton_queue_delay_us >= 0, "triton-queue-delay-us", "must be >= 0")


@dataclass(frozen=True)
class ExportOptions(ExportSettings):
    """What to export and how. Defaults: FP32 ONNX only (the backend every other one derives from).

    ``backends`` names registered export backends (``export.backends``), each asked for on the
    command line by its own flag: ``ExportOptions(backends=("int8", "fp16"))`` is ``--int8 --fp16``.
    An unknown name is refused when the export starts, with the list of registered ones.
    """

    backends: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.qat is None or "int8" in self.backends, "qat", "needs --int8 (it supplies the INT8 graphs)")

    def wants(self, name: str) -> bool:
        return name in self.backends


@dataclass(frozen=True)
class QatSettings:
    """``python -m export.qat``: quantization-aware training of a checkpoint's INT8 graphs."""

    epochs: int = 10  # passes over the training split (the epoch closest to FP32 on validation is kept)
    lr: float = 1e-5  # Adam learning rate of the weights and biases (cosine decay to 0)
    scale_lr: float = 1e-4  # Adam learning rate of the activation scales (cosine decay to 0)
    batch_size: int = 32  # training and evaluation batch size
    calib_images: int = 300  # training images that set the starting ranges (post-training calibration)
    calib_method: str = "minmax"  # calibration of the starting ranges: minmax | entropy | percentile
    select_train_images: int = 500  # training images (as they are, seeded sample) judging the epochs with validation
    data_root: str | None = None  # where the dataset lives, if not where training found it
    seed: int = 0  # image order and calibration sample
    out: Path | None = None  # output folder (default: qat/ beside the checkpoint)
    overwrite: bool = False  # replace an existing output folder
    verbose: bool = False  # show the libraries' own output (onnxruntime's calibration, torch.onnx warnings); or VL2LITE_VERBOSE=1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.calib_images < 1:
            raise UserError("--epochs, --batch-size and --calib-images must be >= 1")
        if self.select_train_images < 0:
            raise UserError(f"--select-train-images must be >= 0 (got {self.select_train_images})")
        if not (self.lr >= 0 and self.scale_lr >= 0 and self.lr + self.scale_lr > 0):
            raise UserError(f"--lr and --scale-lr must be >= 0, not both 0 (got {self.lr}, {self.scale_lr})")
        if self.calib_method not in CALIBRATION_METHODS:
            raise UserError(f"--calib-method must be one of {', '.join(CALIBRATION_METHODS)} (got {self.calib_method!r})")
