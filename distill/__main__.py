"""Command line for distill; fire is called only here.

    python -m distill --config configs/cub.yaml [section.key=value ...]        train
    python -m distill cache --config configs/cub.yaml teacher.cache=DIR ...    build the teacher cache
    python -m distill compare --config X --seeds 0,1,2 [section.key=value ...] baseline vs KD, seed-paired
    python -m distill synthetic data/synthetic-birds [--num_classes 10]        write the demo dataset
"""
from __future__ import annotations

import os
import sys

from distill.config import describe_keys
from distill.errors import UserError, one_line

_KEYS = "\n\nSettable keys (section.key (type) = default):\n    " + "\n    ".join(describe_keys())


def _load(config: str | None, overrides: tuple[str, ...], dotted: dict):
    from distill.config import load_config

    if config is None:
        raise UserError("no config given: pass --config configs/<name>.yaml (e.g. configs/demo.yaml)")
    # fire turns `--train.epochs=3` into a keyword; `train.epochs=3` arrives positionally.
    return load_config(config, [*overrides, *(f"{k}={v}" for k, v in dotted.items())])


def train(config: str | None = None, *overrides: str, **dotted: object) -> str:
    """Train a student with VL2Lite from a YAML config; prints and returns the best checkpoint path.

    Usage: python -m distill --config configs/cub.yaml [train.epochs=20 data.batch_size=64 ...]
    Multi-process: torchrun --nproc_per_node N -m distill --config ...
    """
    from distill.train import fit

    best = fit(_load(config, overrides, dotted))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"best checkpoint: {best}")
    shutdown_ctx()
    return str(best)


def cache(config: str | None = None, *overrides: str, **dotted: object) -> str:
    """Build (or resume) the teacher-embedding cache named by teacher.cache; prints its folder.

    Usage: python -m distill cache --config configs/cub.yaml teacher.cache=cache/cub [teacher.cache_views=8]
    Multi-process: torchrun --nproc_per_node N -m distill cache --config ...
    """
    import time

    from distill.cache import build_cache, open_cache, fingerprint_fields
    from distill.data import load_dataset
    from distill.dist import barrier, init_distributed
    from distill.train import pick_device

    cfg = _load(config, overrides, dotted)
    ctx, device = init_distributed(pick_device(cfg.train.device))
    start = time.perf_counter()
    root = build_cache(cfg, ctx.rank, ctx.world, device)
    barrier(ctx)
    if ctx.is_main:  # verify the whole cache once every rank has finished its shards
        splits = load_dataset(cfg.data)
        done = open_cache(root, fingerprint_fields(cfg, splits))
        n, k = done.meta["num_images"], done.num_views
        print(f"teacher cache: {root} ({n} images x {k} views, built in {time.perf_counter() - start:.1f} s)")
    shutdown_ctx()
    return str(root)


def compare(config: str | None = None, *overrides: str, seeds: object = "0,1,2", **dotted: object) -> str:
    """Train the teacher-off baseline and the config's KD recipe on each seed (one shared teacher
    cache) and print the paired table; writes <out_dir>/<name>/compare.json and prints its path.

    Usage: python -m distill compare --config configs/imagefolder.yaml --seeds 0,1,2 [overrides]
    """
    from distill.compare import compare as run_compare, format_table, parse_seeds

    cfg = _load(config, overrides, dotted)
    summary = run_compare(cfg, parse_seeds(seeds))
    print(format_table(summary))
    out = f"{cfg.train.out_dir}/{cfg.train.name}/compare.json"
    print(f"paired comparison: {out}")
    return out


def synthetic(root: str = "data/synthetic-birds", num_classes: int = 10, train_per_class: int = 40,
              test_per_class: int = 15, seed: int = 0) -> str:
    """Write the synthetic CUB-layout bird dataset used by the demo and the tests."""
    from distill.synthetic import generate

    out = generate(root, num_classes, train_per_class, test_per_class, seed)
    print(f"synthetic CUB-layout dataset at {out}")
    return str(out)


def shutdown_ctx() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


train.__doc__ = (train.__doc__ or "") + _KEYS
cache.__doc__ = (cache.__doc__ or "") + _KEYS
compare.__doc__ = (compare.__doc__ or "") + _KEYS
COMMANDS = {"cache": cache, "compare": compare, "synthetic": synthetic}


def cli(argv: list[str] | None = None) -> None:
    import fire

    argv = sys.argv[1:] if argv is None else argv
    command = COMMANDS.get(argv[0]) if argv else None
    fn, args = (command, argv[1:]) if command else (train, argv)
    if any(a in ("--help", "-h") for a in args):
        print(fn.__doc__)  # fire would pass --help into **dotted
        return
    try:
        fire.Fire(fn, command=args, name=f"distill {argv[0]}" if command else "distill", serialize=lambda _: None)
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished work is kept (last.pt, cache shards); run the same command to resume "
              "(training: add train.resume=true)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
