"""Accuracy and parity of every artifact against the PyTorch student, on real images.

The evaluation images go through the checkpoint's preprocessing spec once (``formats.preprocessing``,
the runtime's own code); every artifact then sees exactly the same float32 batches, so differences
come from the model alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnxruntime as ort
import torch

from formats.accuracy import Parity
from formats.datasets import ImageSource
from formats.isa import measured_here
from formats.paired import paired_drop
from formats.preprocessing import DECODE_MODES, DraftParity, PreprocessSpec, draft_reduces, load_input, preprocess_image
from formats.progress import Step, stage

CACHE_LIMIT_BYTES = 1 << 30  # evaluation batches up to 1 GiB are decoded once and kept in memory

Runner = Callable[[np.ndarray], np.ndarray]  # (B, 3, H, W) float32 -> (B, C) logits


class ImageBatches:
    """Batches ``(x (B,3,H,W) float32, y (B,) int64)`` of an image source through the preprocessing spec.

    The images go through ``formats.preprocessing`` (numpy and Pillow), the code the runtime runs
    on the device, so export scores every artifact on exactly the inputs it will be given there.
    They are decoded during the first full pass (so that pass's progress covers the decoding) and
    kept in memory when they fit in ``CACHE_LIMIT_BYTES``.
    """

    def __init__(self, source: ImageSource, preprocessing: dict, batch_size: int, limit: int = 0) -> None:
        self.source, self.spec, self.batch_size = source, PreprocessSpec.from_dict(preprocessing), batch_size
        self.images = len(source) if limit == 0 else min(limit, len(source))
        h, w = self.spec.input_size
        self._fits = self.images * 3 * h * w * 4 <= CACHE_LIMIT_BYTES
        self._cache: list[tuple[np.ndarray, np.ndarray]] | None = None

    def _decode(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        kept = []
        for start in range(0, self.images, self.batch_size):
            idx = range(start, min(self.images, start + self.batch_size))
            x = np.stack([preprocess_image(self.source.load(i), self.spec) for i in idx])  # (B, 3, H, W)
            y = np.asarray([self.source.labels[i] for i in idx], dtype=np.int64)  # (B,)
            if self._fits:
                kept.append((x, y))
            yield x, y
        if self._fits:
            self._cache = kept  # a complete pass only: one cut short decodes again next time

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return iter(self._cache) if self._cache is not None else self._decode()


@dataclass(frozen=True)
class Predictions:
    logits: np.ndarray  # (N, C) float32
    labels: np.ndarray  # (N,) int64

    @property
    def top1(self) -> np.ndarray:
        return self.logits.argmax(axis=1)  # (N,)

    def accuracy(self) -> float:
        return float((self.top1 == self.labels).mean())


def predict(run: Runner, batches: ImageBatches, step: Step | None = None) -> Predictions:
    """``run`` on every batch; ``step`` (a ``formats.progress`` stage) advances by each batch's images."""
    logits, labels = [], []
    for x, y in batches:
        logits.append(np.asarray(run(x), dtype=np.float32))
        labels.append(y)
        if step is not None:
            step.advance(len(y))
    return Predictions(np.concatenate(logits), np.concatenate(labels))


def torch_runner(model: torch.nn.Module) -> Runner:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).float().numpy()
    return run


def ort_session(path: Path, threads: int = 0, optimize: bool = True) -> ort.InferenceSession:
    """A CPU session with every graph optimisation on (what the runtime uses on x86); ``optimize=False``:
    none, so a Q/DQ graph runs op by op with ONNX's reference semantics (no fused integer kernels)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.intra_op_num_threads = threads
    so.log_severity_level = 3  # our own messages say what matters; ORT's warnings are noise here
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# what onnxruntime computes with its graph optimisations off: each QuantizeLinear / DequantizeLinear
# and float op as the ONNX spec defines it, no fused integer kernels
REFERENCE_SEMANTICS = "onnx Q/DQ reference semantics (onnxruntime, optimisations off)"


def ort_measured_on(optimize: bool = True) -> dict[str, Any]:
    """Where a figure scored here by ``ort_runner`` was measured: this CPU's ISA class and onnxruntime."""
    kernels = "" if optimize else ", graph optimisations off"
    return measured_here(f"onnxruntime {ort.__version__} CPUExecutionProvider{kernels}")


def ort_runner(path: Path, threads: int = 0, optimize: bool = True) -> Runner:
    session = ort_session(path, threads, optimize)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def accuracy_entry(pred: Predictions, ref: Predictions) -> dict[str, float]:
    """top1 (fraction), top1_drop (points vs the PyTorch reference) with the half-width of its 95%
    interval, agreement with PyTorch's top-1."""
    top1 = pred.accuracy()
    return {"top1": round(top1, 6), "top1_drop": round(100.0 * (ref.accuracy() - top1), 4),
            "top1_drop_ci95": round(drop_ci95(pred, ref), 4),
            "agreement": round(float((pred.top1 == ref.top1).mean()), 6)}


def drop_ci95(pred: Predictions, ref: Predictions) -> float:
    """Half-width, in points, of the 95% interval of the top-1 drop, paired on the same images
    (``formats.paired.paired_drop``: the runtime's ``bench --data`` uses the same formula)."""
    return paired_drop(ref.top1 == ref.labels, pred.top1 == pred.labels)[1]


@dataclass(frozen=True)
class Tolerance:
    """Parity passes when max|logit diff| <= atol + rtol * max|reference logit| and top-1 agrees."""

    atol: float
    rtol: float
    min_agreement: float


# FP32 ONNX is a conversion, not an approximation: it must reproduce PyTorch (a bug otherwise).
# Approximations (FP16, INT8, engines) are judged by the one accuracy budget (formats.accuracy.Budget).
FP32_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-4, min_agreement=1.0)


def parity(pred: Predictions, ref: Predictions, n: int) -> Parity:
    """Logit comparison on the first ``n`` evaluation images."""
    diff = np.abs(pred.logits[:n] - ref.logits[:n])
    return Parity(float(diff.max()), float((pred.top1[:n] == ref.top1[:n]).mean()), int(min(n, len(diff))))


def parity_ok(figures: Parity, ref: Predictions, tol: Tolerance) -> bool:
    scale = float(np.abs(ref.logits[: figures.images]).max())
    return figures.max_abs_logit_diff <= tol.atol + tol.rtol * scale and figures.top1_agreement >= tol.min_agreement


# JPEG draft decoding (formats.preprocessing) becomes the runtime's default only when, on at least
# this many evaluation JPEGs it reduces, it keeps top-1 within this many points of exact decoding
# and agrees with it on this fraction of the images.
DRAFT_MIN_IMAGES = 50
DRAFT_MAX_TOP1_DROP = 0.2
DRAFT_MIN_AGREEMENT = 0.99


def jpeg_draft_parity(source: ImageSource, spec: PreprocessSpec, run: Runner, exact: Predictions,
                      batch_size: int) -> DraftParity:
    """Top-1 of exact vs JPEG draft decoding, through ``run`` (the PyTorch student), on the images of
    ``source`` that draft decoding reduces among the first ones, whose exact predictions ``exact`` holds."""
    paths = [source.path(i) for i in range(len(exact.labels))]
    idx = [i for i, p in enumerate(paths) if p is not None and draft_reduces(p, spec)]
    if not idx:
        return DraftParity(0, None, None, None, False, "no evaluation image is a JPEG large enough for draft "
                           "decoding to reduce: exact decoding everywhere")
    logits = []
    with stage("JPEG draft decoding", total=len(idx), unit="image") as step:
        for k in range(0, len(idx), batch_size):
            chunk = idx[k:k + batch_size]
            logits.append(run(np.stack([load_input(paths[i], spec, decode="jpeg-draft") for i in chunk])))  # (B, C)
            step.advance(len(chunk))
    top1 = {"exact": exact.top1[idx], "jpeg-draft": np.concatenate(logits).argmax(axis=1)}  # (N,) each
    labels = exact.labels[idx]  # (N,)
    exact_top1, draft = (float((top1[m] == labels).mean()) for m in DECODE_MODES)
    agreement = float((top1["exact"] == top1["jpeg-draft"]).mean())
    drop = 100.0 * (exact_top1 - draft)
    accepted = len(idx) >= DRAFT_MIN_IMAGES and drop <= DRAFT_MAX_TOP1_DROP and agreement >= DRAFT_MIN_AGREEMENT
    reason = (f"accepted: {len(idx)} JPEGs, top-1 {100 * draft:.2f}% vs {100 * exact_top1:.2f}% exact, "
              f"{100 * agreement:.1f}% agreement" if accepted else
              f"not accepted (needs >= {DRAFT_MIN_IMAGES} JPEGs, a top-1 drop <= {DRAFT_MAX_TOP1_DROP} points and "
              f">= {100 * DRAFT_MIN_AGREEMENT:.0f}% agreement; measured {len(idx)} JPEGs, drop {drop:.2f} points, "
              f"{100 * agreement:.1f}% agreement): exact decoding by default")
    return DraftParity(len(idx), round(exact_top1, 6), round(draft, 6), round(agreement, 6), accepted, reason)
