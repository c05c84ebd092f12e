"""``python -m export <checkpoint> [--int8] [--fp16] [--trt] [--triton] [--out DIR] [options]``."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from distill.errors import UserError, one_line
from export.options import ExportOptions

_FLAGS = {f.name for f in dataclasses.fields(ExportOptions)}


def main(checkpoint: str | None = None, out: str | None = None, **options: object) -> str:
    """Export a distilled student checkpoint into a deployable bundle folder; prints its path.

    Usage: python -m export runs/<run>/best.pt [--int8] [--fp16] [--trt] [--triton] [--out bundles/<name>]

    Artifacts: model.onnx (FP32, always), model.fp16.onnx (--fp16), model.int8.onnx and
    model.int8.trt.onnx (--int8), TensorRT engines (--trt, needs tensorrt), a Triton model
    repository (--triton), labels.txt, preprocessing.json and manifest.json (written last).

    Every artifact is evaluated on the test split against the PyTorch student. INT8 must stay
    within --max-top1-drop points (default 1.0); otherwise other calibration methods, more
    images and float fallbacks for sensitive layers are tried, and the export fails (exit 3,
    with the table of attempts) if none fits. See docs/export.md.
    """
    from export.api import export_bundle

    if checkpoint is None:
        raise UserError("no checkpoint given: python -m export runs/<run>/best.pt [--int8] [--out DIR]")
    unknown = sorted(set(options) - _FLAGS)
    if unknown:
        raise UserError(f"unknown option --{unknown[0].replace('_', '-')}; valid options: "
                        + ", ".join(f"--{n.replace('_', '-')}" for n in sorted(_FLAGS)))
    opts = ExportOptions(**{k: _typed(k, v) for k, v in options.items()})
    target = Path(out) if out is not None else Path("bundles") / Path(checkpoint).resolve().parent.name
    path = export_bundle(Path(checkpoint), target, opts)
    print(path)
    return str(path)


def _typed(name: str, value: object) -> object:
    """fire types values by their look (``--name 123`` is an int): coerce to the field's type."""
    kind = {f.name: f.type for f in dataclasses.fields(ExportOptions)}[name]
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            raise ValueError
        if kind == "int":
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if kind == "float":
            return float(value)
        return None if value is None else str(value)
    except (TypeError, ValueError):
        raise UserError(f"--{name.replace('_', '-')} expects a {kind.split(' ')[0]}, got {value!r}") from None


main.__doc__ = (main.__doc__ or "") + "\n\nOptions (--name value; defaults):\n    " + "\n    ".join(
    f"--{f.name.replace('_', '-')} ({f.type}) = {f.default!r}" for f in dataclasses.fields(ExportOptions))


def cli() -> None:
    import fire
    from export.int8 import BudgetError
    if {"-h", "--help"} & set(sys.argv[1:]):  # **options would swallow --help as a flag
        print(f"python -m export\n\n{main.__doc__}")
        return
    try:
        fire.Fire(main, name="export", serialize=lambda _: None)
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
