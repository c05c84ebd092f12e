"""``python -m distill --config configs/cub.yaml [section.key=value ...]``."""
from __future__ import annotations

import sys

from distill.config import describe_keys
from distill.errors import UserError, one_line


def main(config: str | None = None, *overrides: str, **dotted: object) -> str:
    """Train a student with VL2Lite from a YAML config; prints and returns the best checkpoint path.

    Usage: python -m distill --config configs/cub.yaml [train.epochs=20 data.batch_size=64 ...]
    """
    from distill.config import load_config
    from distill.train import fit

    if config is None:
        raise UserError("no config given: pass --config configs/<name>.yaml (e.g. configs/demo.yaml)")
    # fire turns `--train.epochs=3` into a keyword; `train.epochs=3` arrives positionally.
    cfg = load_config(config, [*overrides, *(f"{k}={v}" for k, v in dotted.items())])
    best = fit(cfg)
    print(f"best checkpoint: {best}")
    return str(best)


main.__doc__ = (main.__doc__ or "") + "\n\nSettable keys (section.key (type) = default):\n    " + \
    "\n    ".join(describe_keys())


def cli() -> None:
    import fire
    if any(a in ("--help", "-h") for a in sys.argv[1:]):
        print(main.__doc__)  # fire would pass --help into **dotted
        return
    try:
        fire.Fire(main, name="distill", serialize=lambda _: None)
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: last.pt holds the last finished epoch; resume with train.resume=true",
              file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
