"""Classify images with a bundle: ``python -m runtime.predict <bundle> <image>... [--top-k 5] [--json]``.

Options: ``--backend`` (default ``onnxruntime``: CUDA when installed, else CPU), ``--artifact``
(a file of the bundle, default the first one the backend runs), ``--top-k``, ``--json``,
``--decode`` (``auto``: JPEG draft decoding where export accepted it for this bundle; ``exact``).
"""
from __future__ import annotations

import json as jsonlib
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from formats.cli import Positional, parser_for, settings_from
from formats.errors import UserError, run_cli
from runtime.model import open_classifier, top_k_predictions


def predict_files(bundle: str | Path, images: list[str | Path], top_k: int = 5, backend: str = "onnxruntime",
                  artifact: str | None = None, decode: str = "auto") -> list[dict[str, Any]]:
    """Top-k predictions per image: [{"image", "predictions": [{"label", "index", "probability"}]}]."""
    if not images:
        raise UserError("no images given: python -m runtime.predict <bundle> <image>...")
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    clf = open_classifier(bundle, backend, artifact, decode=decode)
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


@dataclass(frozen=True)
class PredictSettings:
    top_k: int = 5  # predictions per image
    backend: str = "onnxruntime"  # onnxruntime (CUDA when installed, else CPU), onnxruntime-cpu, tensorrt
    artifact: str | None = None  # a file of the bundle; default: the first one the backend runs
    json: bool = False  # print JSON instead of text
    decode: str = "auto"  # auto (JPEG draft decoding where export accepted it for the bundle) | exact | jpeg-draft


def main(argv: list[str] | None = None) -> None:
    """CLI: arguments are parsed (strictly, from PredictSettings) before the bundle is opened."""
    parser = parser_for("python -m runtime.predict", __doc__.splitlines()[0], PredictSettings,
                        [Positional("bundle", "the bundle folder written by python -m export"),
                         Positional("images", "image files to classify", nargs="+")])
    args = parser.parse_args(argv)

    def go() -> None:
        settings = settings_from(PredictSettings, args)
        results = predict_files(args.bundle, args.images, settings.top_k, settings.backend, settings.artifact,
                                settings.decode)
        print(jsonlib.dumps(results, indent=2) if settings.json else format_text(results))
    run_cli(go)


if __name__ == "__main__":
    main()
