"""A bundle artifact opened on a backend: images in, top-k labels out."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from formats.bundle import Artifact, Bundle, load_bundle, verify_artifact
from formats.errors import UserError
from formats.preprocessing import load_input, preprocess_batch
from runtime.backends import SessionOptions, get_backend, require_available
from runtime.backends.base import Session
from runtime.provenance import startup_note
from runtime.settings import DECODE_CHOICES


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    probability: float


@dataclass
class Classifier:
    bundle: Bundle
    artifact: Artifact
    session: Session
    decode: str = "exact"  # how image files are decoded: exact | jpeg-draft (decode_mode)

    @property
    def provenance_note(self) -> str | None:
        """The line to print once at start when this device is not where the artifact's accuracy was
        measured, or that is unknown (INT8 only: runtime.provenance.startup_note); else None."""
        return startup_note(self.artifact)

    def load(self, source: str | Path | bytes, max_pixels: int | None = None) -> np.ndarray:
        """An image file or encoded bytes -> the model input (3, H, W), decoded the chosen way."""
        limit = {} if max_pixels is None else {"max_pixels": max_pixels}
        return load_input(source, self.bundle.preprocessing, decode=self.decode, **limit)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, H, W) -> (N, C), split into chunks of the bundle's max batch."""
        step = self.bundle.max_batch
        return np.concatenate([self.session.run(batch[i:i + step]) for i in range(0, len(batch), step)])

    def predict(self, images: list[Image.Image], top_k: int = 5) -> list[list[Prediction]]:
        logits = self.logits(preprocess_batch(images, self.bundle.preprocessing))
        return top_k_predictions(logits, self.bundle.labels, top_k)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)  # stable: exp never overflows
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_k_predictions(logits: np.ndarray, labels: tuple[str, ...], k: int) -> list[list[Prediction]]:
    probs = softmax(logits.astype(np.float64))
    k = min(k, probs.shape[-1])
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return [[Prediction(labels[i], int(i), float(p[i])) for i in row] for p, row in zip(probs, order)]


def select_artifact(bundle: Bundle, backend: str, artifact: str | None = None) -> Artifact:
    """The named artifact (checked against the backend), else the first one the backend accepts that
    met the bundle's accuracy budget (an over-budget one, kept by ``export --best-effort``, only by name)."""
    spec = get_backend(backend)
    if artifact is not None:
        art = bundle.artifact(artifact)
        if not spec.accepts(art):
            raise UserError(f"backend {backend} cannot run {art.file} (format {art.format}, target "
                            f"{art.target}): pick another --backend or --artifact")
        return art
    runnable = [art for art in bundle.artifacts if spec.accepts(art)]
    for art in runnable:
        if art.within_budget is not False:
            return art
    if runnable:
        raise UserError(f"every artifact of {bundle.root} that backend {backend} runs missed the accuracy budget "
                        f"({', '.join(a.file for a in runnable)}): name one with --artifact to use it anyway, "
                        f"or pick another --backend")
    raise UserError(f"bundle {bundle.root} has no artifact that backend {backend} runs: pick another --backend")


def decode_mode(bundle: Bundle, requested: str = "auto") -> str:
    """``auto``: JPEG draft decoding where export measured and accepted its top-1 parity on this
    bundle (preprocessing.json ``jpeg_draft``), else exact; ``exact`` and ``jpeg-draft`` as asked."""
    if requested not in DECODE_CHOICES:
        raise UserError(f"--decode {requested!r} is not one of {', '.join(DECODE_CHOICES)}")
    if requested != "auto":
        return requested
    draft = bundle.preprocessing.jpeg_draft
    return "jpeg-draft" if draft is not None and draft.accepted else "exact"


def open_classifier(bundle: str | Path | Bundle, backend: str = "onnxruntime", artifact: str | None = None,
                    options: SessionOptions = SessionOptions(), decode: str = "auto") -> Classifier:
    """Load a bundle (its sidecars and the model file it opens checked against their sha256) and open
    one artifact on one backend."""
    spec = require_available(get_backend(backend))  # first: "not installed" beats "no artifact for it"
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, artifacts=False)
    mode = decode_mode(b, decode)
    art = select_artifact(b, backend, artifact)
    verify_artifact(b, art)  # only the model file it loads: the others may be large and unused here
    session = spec.open(art, options)
    return Classifier(b, art, session, mode)
