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
from runtime.choice import ArtifactChoice, choose_artifact
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
    choice: ArtifactChoice | None = None  # which artifact and why (runtime.choice); None: built by hand

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


def select_artifact(bundle: Bundle, backend: str, artifact: str | None = None,
                    bench: str | Path | None = None) -> Artifact:
    """The named artifact (checked against the backend), else the fastest one within the accuracy
    budget for this device (runtime.choice: measured by a bench.json of this device, else a static rule)."""
    return choose_artifact(bundle, backend, artifact, bench).artifact


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
                    options: SessionOptions = SessionOptions(), decode: str = "auto",
                    bench: str | Path | None = None) -> Classifier:
    """Load a bundle (its sidecars and the model file it opens checked against their sha256) and open
    one artifact on one backend: ``artifact``, else the fastest within the accuracy budget here
    (runtime.choice; ``bench``: the bench.json to judge by, default runs/bench/<bundle name>/bench.json)."""
    spec = require_available(get_backend(backend))  # first: "not installed" beats "no artifact for it"
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, artifacts=False)
    mode = decode_mode(b, decode)
    choice = choose_artifact(b, backend, artifact, bench)
    verify_artifact(b, choice.artifact)  # only the model file it loads: the others may be large and unused here
    session = spec.open(choice.artifact, options)
    return Classifier(b, choice.artifact, session, mode, choice)
