"""Classify images with a bundle: ``python -m runtime.predict <bundle> <image>... [--top-k 5] [--json]``.

Options: ``--backend`` (default ``onnxruntime``: CUDA when installed, else CPU), ``--artifact``
(a file of the bundle, default the first one the backend runs), ``--top-k``, ``--json``.
"""
from __future__ import annotations

import json as jsonlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from formats.cli import Positional, parser_for, settings_from
from formats.errors import UserError, run_cli
from formats.preprocessing import open_image
from runtime.model import open_classifier


def predict_files(bundle: str | Path, images: list[str | Path], top_k: int = 5, backend: str = "onnxruntime",
                  artifact: str | None = None) -> list[dict[str, Any]]:
    """Top-k predictions per image: [{"image", "predictions": [{"label", "index", "probability"}]}]."""
    if not images:
        raise UserError("no images given: python -m runtime.predict <bundle> <image>...")
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    clf = open_classifier(bundle, backend, artifact)
    step, results = clf.bundle.max_batch, []
    for start in range(0, len(images), step):  # decode one batch at a time: memory stays bounded
        chunk = images[start:start + step]
        results += clf.predict([open_image(Path(p)) for p in chunk], top_k)
    return [{"image": str(p), "artifact": clf.artifact.file, "backend": clf.session.device,
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


def main(argv: list[str] | None = None) -> None:
    """CLI: arguments are parsed (strictly, from PredictSettings) before the bundle is opened."""
    parser = parser_for("python -m runtime.predict", __doc__.splitlines()[0], PredictSettings,
                        [Positional("bundle", "the bundle folder written by python -m export"),
                         Positional("images", "image files to classify", nargs="+")])
    args = parser.parse_args(argv)

    def go() -> None:
        settings = settings_from(PredictSettings, args)
        results = predict_files(args.bundle, args.images, settings.top_k, settings.backend, settings.artifact)
        print(jsonlib.dumps(results, indent=2) if settings.json else format_text(results))
    run_cli(go)


if __name__ == "__main__":
    main()
