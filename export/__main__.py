"""``python -m export <checkpoint> [--int8] [--fp16] [--trt] [--triton] [--out DIR] [options]``."""
from __future__ import annotations

import sys
from pathlib import Path

from export.options import ExportOptions
from formats.cli import Positional, parser_for, settings_from
from formats.errors import UserError, one_line

DESCRIPTION = """Export a distilled student checkpoint into a deployable bundle folder; prints its path.

Artifacts: model.onnx (FP32, always), model.fp16.onnx (--fp16), model.int8.onnx and
model.int8.trt.onnx (--int8), TensorRT engines (--trt, needs tensorrt), a Triton model
repository (--triton), labels.txt, preprocessing.json and manifest.json (written last).

Every artifact is evaluated against the PyTorch student and held to one accuracy budget
(--max-top1-drop points, default 1.0). INT8 tries other calibration methods, more images and
float fallbacks for sensitive layers first; if an artifact still misses the budget the export
fails (exit 3, with the table of attempts) and writes nothing. See docs/export.md."""


def parser():
    p = parser_for("python -m export", DESCRIPTION, ExportOptions,
                   [Positional("checkpoint", "the best.pt written by python -m distill")])
    p.add_argument("--out", type=Path, default=None, help="bundle folder (default: bundles/<run name>)")
    return p


def main(argv: list[str] | None = None) -> Path:
    """Parse (strictly, before any work), export, print the bundle path."""
    from export.api import export_bundle

    args = parser().parse_args(argv)
    opts = settings_from(ExportOptions, args)
    checkpoint = Path(args.checkpoint)
    target = args.out if args.out is not None else Path("bundles") / checkpoint.resolve().parent.name
    path = export_bundle(checkpoint, target, opts)
    print(path)
    return path


def cli(argv: list[str] | None = None) -> None:
    from export.backends import BudgetError
    try:
        main(argv)
    except BudgetError as exc:
        print(exc.table, file=sys.stderr)
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(3)
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: no bundle was written", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
