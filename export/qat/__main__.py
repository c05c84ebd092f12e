"""``python -m export.qat <checkpoint> [options]``: arguments checked before any work; errors exit 2."""
from __future__ import annotations

import sys
from pathlib import Path

from export.settings import QatSettings
from formats.cli import Positional, parser_for, settings_from
from formats.errors import run_cli

DESCRIPTION = ("Fine-tune the INT8 graphs of a checkpoint with fake quantization toward its FP32 student (for when "
               "post-training INT8 misses the accuracy budget); writes <out>/model.int8.onnx, model.int8.trt.onnx "
               "and qat.json. Then: python -m export <checkpoint> --int8 --qat <out> (no calibration). "
               "See docs/export.md.")


def main(argv: list[str] | None = None) -> Path:
    from export.int8.qat import quantization_aware_training

    parser = parser_for("python -m export.qat", DESCRIPTION, QatSettings,
                        [Positional("checkpoint", "the best.pt written by python -m distill")])
    args = parser.parse_args(argv)
    out = quantization_aware_training(Path(args.checkpoint), settings_from(QatSettings, args))
    print(out)
    print(f"export them with: python -m export {args.checkpoint} --int8 --qat {out}", file=sys.stderr)
    return out


if __name__ == "__main__":
    run_cli(main, "interrupted: no QAT folder was written")
