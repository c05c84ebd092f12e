"""``python -m export <checkpoint> [--int8] [--fp16] [--trt] [--triton] [--out DIR] [options]``.

One flag per registered export backend (``export.registry``: a module of ``export/backends/``
adds its own), then the settings every backend shares (``export.settings.ExportSettings``).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from export.registry import backends
from export.settings import ExportOptions, ExportSettings
from formats.cli import Positional, add_settings, parser_for, settings_from
from formats.errors import run_cli

DESCRIPTION = """Export a distilled student checkpoint into a deployable bundle folder; prints its path.

Artifacts: model.onnx (FP32, always), model.fp16.onnx (--fp16), model.int8.onnx and
model.int8.trt.onnx (--int8), TensorRT engines (--trt, needs tensorrt), a Triton model
repository (--triton), labels.txt, preprocessing.json and manifest.json (written last).

Every artifact is evaluated against the PyTorch student and held to one accuracy budget
(--max-top1-drop points, default 1.0). INT8 tries other calibration methods, more images and
float fallbacks for sensitive layers first; if an artifact still misses the budget the export
fails (exit 3, with the table of attempts) and writes nothing. See docs/export.md."""


def parser() -> argparse.ArgumentParser:
    p = parser_for("python -m export", DESCRIPTION, None,
                   [Positional("checkpoint", "the best.pt written by python -m distill")])
    for b in backends():
        if not b.always:
            p.add_argument(f"--{b.name}", dest=f"backend_{b.name}", action=argparse.BooleanOptionalAction,
                           default=False, help=f"{b.help} (default: False)".replace("%", "%%"))
    add_settings(p, ExportSettings)
    p.add_argument("--out", type=Path, default=None, help="bundle folder (default: bundles/<run name>)")
    return p


def options_from(args: argparse.Namespace) -> ExportOptions:
    """The options the parsed flags ask for (ranges checked here, before any work)."""
    settings = settings_from(ExportSettings, args)
    asked = tuple(b.name for b in backends() if not b.always and getattr(args, f"backend_{b.name}"))
    return ExportOptions(**dataclasses.asdict(settings), backends=asked)


def main(argv: list[str] | None = None) -> Path:
    """Parse (strictly, before any work), export, print the bundle path."""
    from export.api import export_bundle

    args = parser().parse_args(argv)
    options = options_from(args)
    checkpoint = Path(args.checkpoint)
    target = args.out if args.out is not None else Path("bundles") / checkpoint.resolve().parent.name
    path = export_bundle(checkpoint, target, options)
    print(path)
    return path


if __name__ == "__main__":
    run_cli(main, "interrupted: no bundle was written")
