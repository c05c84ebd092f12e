"""Classify images with a bundle: ``python -m runtime.predict <bundle> <image>... [--top-k 5] [--json]``.

Options: ``--backend`` (default ``onnxruntime``: CUDA when installed, else CPU), ``--artifact``
(a file of the bundle, default the first one the backend runs), ``--top-k``, ``--json``.
"""
from __future__ import annotations

import json as jsonlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from runtime.errors import RuntimeUserError, run_cli
from runtime.model import open_classifier
from runtime.preprocess import open_image


def predict_files(bundle: str | Path, images: list[str | Path], top_k: int = 5, backend: str = "onnxruntime",
                  artifact: str | None = None) -> list[dict[str, Any]]:
    """Top-k predictions per image: [{"image", "predictions": [{"label", "index", "probability"}]}]."""
    if not images:
        raise RuntimeUserError("no images given: python -m runtime.predict <bundle> <image>...")
    if top_k < 1:
        raise RuntimeUserError(f"--top-k must be at least 1, got {top_k}")
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


def main(bundle: str, *images: str, top_k: int = 5, backend: str = "onnxruntime", artifact: str | None = None,
         json: bool = False) -> None:
    """CLI: fire types values by their text, so convert and check here."""
    def go() -> None:
        k = _as_int(top_k, "--top-k")
        results = predict_files(str(bundle), [str(p) for p in images], k, str(backend),
                                None if artifact is None else str(artifact))
        print(jsonlib.dumps(results, indent=2) if json else format_text(results))
    run_cli(go)


def _as_int(value: Any, flag: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuntimeUserError(f"{flag} takes a whole number, got {value!r}")
    return value


def cli() -> None:
    import fire
    fire.Fire(main, name="python -m runtime.predict")


if __name__ == "__main__":
    cli()
