"""The pipeline's settings: ``SweepSettings`` (the options of ``python -m pipeline sweep``).

The export, QAT and benchmark options travel as one command-line string each (``--export-args
"--int8 --best-effort"``): the very options of ``python -m export``, ``python -m export.qat`` and
``python -m runtime.bench``. They are read here, strictly, into those stages' own settings
(``ExportOptions``, ``QatSettings``, ``BenchSettings``), so a typo is refused before the first
minute of training; export's string goes through export's own parser, which has a flag for every
registered export backend.
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
from dataclasses import dataclass
from typing import Callable, NoReturn, TypeVar

from export import ExportOptions, QatSettings
from formats.cli import add_settings, settings_from
from formats.errors import UserError, one_line
from runtime.settings import BenchSettings

S = TypeVar("S")
# Options the sweep sets itself, per stage string: naming one there is refused.
SET_BY_SWEEP = {ExportOptions: ("overwrite", "qat"), QatSettings: ("out", "overwrite"),
                BenchSettings: ("out", "budget_ms")}


@dataclass(frozen=True)
class SweepSettings:
    budget_ms: float | None = None  # latency budget (SingleStream p50, batch 1, this machine): names the best student
    export_args: str = "--int8 --best-effort"  # options for python -m export, as one string
    bench_args: str = "--batch 1,8"  # options for python -m runtime.bench, as one string
    bench: bool = True  # benchmark the bundles here (--no-bench: train and export only, bench on the device)
    qat: bool = False  # a student whose INT8 misses the budget: python -m export.qat, then export again with --qat
    qat_args: str = ""  # options for python -m export.qat, as one string

    def __post_init__(self) -> None:
        if self.budget_ms is not None and self.budget_ms <= 0:
            raise UserError(f"--budget-ms must be > 0 milliseconds, got {self.budget_ms}")
        export, _, _ = self.export_options, self.qat_settings, self.bench_settings  # each read before any work
        if self.qat and not export.wants("int8"):
            raise UserError("--qat retrains INT8 graphs that missed the budget: --export-args must include --int8")

    @property
    def export_options(self) -> ExportOptions:
        """``--export-args`` as export's options (``overwrite``: a sweep replaces its own bundles)."""
        return dataclasses.replace(read_stage(_export_options, self.export_args, "--export-args"), overwrite=True)

    @property
    def qat_settings(self) -> QatSettings:
        return dataclasses.replace(read_stage(_reader(QatSettings), self.qat_args, "--qat-args"), overwrite=True)

    @property
    def bench_settings(self) -> BenchSettings:
        return dataclasses.replace(read_stage(_reader(BenchSettings), self.bench_args, "--bench-args"),
                                   budget_ms=self.budget_ms)


def read_stage(read: Callable[[list[str]], S], text: str, flag: str) -> S:
    """A stage's options string read by ``read``; any mistake is one UserError naming ``flag``."""
    try:
        return _owned(read(shlex.split(text)))
    except (UserError, ValueError) as exc:  # ValueError: shlex's unclosed quote
        raise UserError(f"{flag} {text!r}: {one_line(exc)}") from None


def _export_options(argv: list[str]) -> ExportOptions:
    """Read by the parser of ``python -m export`` (a flag per registered backend), as the rest of a
    ``python -m export best.pt ...`` line."""
    from export.__main__ import options_from, parser

    args = _parse(parser(), ["best.pt", *argv])
    if args.out is not None:
        raise UserError("the sweep sets --out itself: leave it out")
    return options_from(args)


def _reader(cls: type[S]) -> Callable[[list[str]], S]:
    """argv -> the settings dataclass ``cls``, one option per field (as its own command line has)."""
    def read(argv: list[str]) -> S:
        parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        add_settings(parser, cls)
        return settings_from(cls, _parse(parser, argv))
    return read


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, a mistake raised as a UserError (argparse would print and exit)."""
    def refuse(message: str) -> NoReturn:
        raise UserError(message)
    parser.error = refuse  # type: ignore[method-assign]
    return parser.parse_args(argv)


def _owned(settings: S) -> S:
    """``settings``, unless the string set an option the sweep sets itself."""
    default = type(settings)()
    taken = [f"--{n.replace('_', '-')}" for n in SET_BY_SWEEP[type(settings)]
             if getattr(settings, n) != getattr(default, n)]
    if taken:
        raise UserError(f"the sweep sets {', '.join(taken)} itself: leave it out")
    return settings
