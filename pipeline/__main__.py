"""Command line of the orchestrator (arguments parsed strictly, before any work).

    python -m pipeline sweep --config X student.arch=a,b,c [--budget-ms 2] [--qat]   many students, one frontier
"""
from __future__ import annotations

import sys

from distill.config_parse import dotted_overrides
from distill.settings import keys_help
from formats.cli import Positional, parser_for, settings_from
from formats.errors import UserError, run_cli
from pipeline.settings import SweepSettings

COMMANDS_HELP = """Commands (each has --help):
    python -m pipeline sweep --config C student.arch=a,b,c ...   many students: train, export, benchmark, pick"""
OVERRIDES = Positional("overrides", "section.key=value settings over the config file (student.arch=a,b,c names "
                       "the students)", nargs="*")


def sweep(argv: list[str]) -> str:
    """Train, export and benchmark several students from one teacher cache; prints the table and the pick."""
    from distill.config import load_config
    from pipeline.sweep import format_sweep, split_students
    from pipeline.sweep import sweep as run_sweep

    keys = keys_help(argv) if "-h" in argv or "--help" in argv else ""
    parser = parser_for("python -m pipeline sweep", "Train, export and benchmark several students from one teacher "
                        f"cache; writes <out_dir>/<name>/sweep.json and the frontier.\n\n{keys}", SweepSettings,
                        [OVERRIDES])
    parser.add_argument("--config", required=True, help="the YAML config, e.g. configs/demo.yaml")
    args = parser.parse_intermixed_args(dotted_overrides(argv))  # overrides before and after the options
    settings = settings_from(SweepSettings, args)
    students, overrides = split_students(args.overrides)
    cfg = load_config(args.config, overrides)
    print(format_sweep(run_sweep(cfg, students, settings)))
    out = f"{cfg.train.out_dir}/{cfg.train.name}/sweep.json"
    print(f"sweep: {out}")
    return out


COMMANDS = {"sweep": sweep}


def dispatch(argv: list[str]) -> str | None:
    if argv and argv[0] in ("-h", "--help"):
        print(f"{__doc__.strip()}\n\n{COMMANDS_HELP}")
        return None
    if not argv or argv[0] not in COMMANDS:
        got = f"unknown command {argv[0]!r}" if argv else "no command"
        raise UserError(f"{got}: choose one of {', '.join(COMMANDS)} (python -m pipeline --help lists them)")
    return COMMANDS[argv[0]](argv[1:])


def main(argv: list[str] | None = None) -> str | None:
    argv = sys.argv[1:] if argv is None else argv
    return run_cli(lambda: dispatch(argv), "interrupted: finished students are kept (runs, bundles, sweep.json); "
                   "run the same command to go on (finished work is reused)")


if __name__ == "__main__":
    main()
