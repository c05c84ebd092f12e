"""Classify images with a bundle: ``python -m runtime.predict <bundle> <image>... [--top-k 5] [--json]``.

Options: ``--backend`` (default ``onnxruntime``: CUDA when installed, else CPU), ``--artifact``
(a file of the bundle; default the fastest within the accuracy budget on this device, by
``--bench`` or a static rule: runtime.choice, said on stderr), ``--top-k``, ``--json``, ``--verbose``,
``--decode`` (``auto``: JPEG draft decoding where export accepted it for this bundle; ``exact``):
``runtime.settings.PredictSettings``. The command line is ``__main__``.
"""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from formats.errors import UserError
from runtime.backends import SessionOptions
from runtime.model import open_classifier, top_k_predictions


def predict_files(bundle: str | Path, images: list[str | Path], top_k: int = 5, backend: str = "onnxruntime",
                  artifact: str | None = None, decode: str = "auto", bench: str | Path | None = None,
                  verbose: bool = False) -> list[dict[str, Any]]:
    """Top-k predictions per image: [{"image", "predictions": [{"label", "index", "probability"}]}].
    Which artifact runs (``artifact``, else the fastest within the accuracy budget here, judged by
    ``bench``: runtime.choice) is said on stderr first."""
    if not images:
        raise UserError("no images given: python -m runtime.predict <bundle> <image>...")
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    clf = open_classifier(bundle, backend, artifact, SessionOptions(verbose=verbose), decode, bench)
    if clf.choice is not None:
        print(clf.choice.line, file=sys.stderr)
    if clf.provenance_note:  # once, before any answer: the manifest's top-1 may not hold on this CPU
        print(clf.provenance_note, file=sys.stderr)
    step, results = clf.bundle.max_batch, []
    for start in range(0, len(images), step):  # decode one batch at a time: memory stays bounded
        x = np.stack([clf.load(Path(p)) for p in images[start:start + step]])  # (B, 3, H, W)
        results += top_k_predictions(clf.logits(x), clf.bundle.labels, top_k)
    return [{"image": str(p), "artifact": clf.artifact.file, "backend": clf.session.device, "decode": clf.decode,
             "predictions": [asdict(pred) for pred in preds]} for p, preds in zip(images, results)]


def format_text(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        lines.append(f"{r['image']}  ({r['artifact']} on {r['backend']})")
        lines += [f"  {p['probability']:7.2%}  {p['label']}" for p in r["predictions"]]
    return "\n".join(lines)
