"""Command lines generated from the settings dataclasses: one parser, one coercion, strict.

Every field of a frozen settings dataclass becomes ``--field-name`` (``--field_name`` also works),
typed by its annotation: ``bool`` as ``--x`` / ``--no-x``, ``int``, ``float``, ``str``, ``Path``,
``X | None`` (absent: ``None``) and ``tuple[X, ...]`` as a comma-separated list. The help of an
option is the comment after its field in the source; ``field(metadata={"flag": "batch"})`` names
the option differently from the field. Unknown options, extra positional arguments and values of
the wrong type are refused before any work starts, with argparse's usage line and exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

S = TypeVar("S")


@dataclasses.dataclass(frozen=True)
class Positional:
    """A positional argument: ``nargs`` "?" (optional), "*" (any number) or None (exactly one)."""

    name: str
    help: str
    nargs: str | None = None


def field_comments(cls: type) -> dict[str, str]:
    """``name -> comment`` for ``name: type = default  # comment`` lines of a class's source."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    for line in source.splitlines():
        head, sep, comment = line.partition("  # ")
        name = head.strip().split(":", 1)[0]
        if sep and ":" in head and name.isidentifier():
            comments[name] = comment.strip()
    return comments


def _unwrap_optional(kind: Any) -> Any:
    """``X | None`` -> ``X`` (an absent option keeps its default, None); anything else unchanged."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None))
    return kind


def _converter(kind: Any, flag: str) -> Callable[[str], Any]:
    """str -> value of ``kind``; a bad value raises argparse's own error naming the flag."""
    if typing.get_origin(kind) is tuple:
        item = _converter(typing.get_args(kind)[0], flag)

        def to_tuple(text: str) -> tuple:
            return tuple(item(part.strip()) for part in text.split(",") if part.strip())
        to_tuple.__name__ = f"comma-separated {getattr(typing.get_args(kind)[0], '__name__', 'value')} list"
        return to_tuple
    if kind in (int, float, str, Path):
        return kind
    raise TypeError(f"{flag}: no command-line form for the type {kind!r}")


def _metavar(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        return "A,B,..."
    return {int: "N", float: "X", Path: "PATH"}.get(kind, "TEXT")


def add_settings(parser: argparse.ArgumentParser, cls: type) -> None:
    """One option per field of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        name = f.metadata.get("flag", f.name)
        kind = _unwrap_optional(hints[f.name])
        alias = "_" in name and kind is not bool  # --max_batch too; a bool's --no- form stays dashed only
        flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if alias else [])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        comment = comments.get(f.name, "").replace("%", "%%")  # argparse formats help strings with %
        help_text = comment if "default" in comment else f"{comment} (default: {default!r})".strip()
        if kind is bool:
            parser.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
        else:
            parser.add_argument(*flags, dest=f.name, type=_converter(kind, flags[0]), default=default,
                                metavar=_metavar(kind), help=help_text)


class StrictParser(argparse.ArgumentParser):
    """argparse with a one-line error (the problem, and where the options are listed), exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} ({self.prog} --help lists the options)\n")


def parser_for(prog: str, description: str, cls: type | None, positionals: Sequence[Positional] = ()
               ) -> argparse.ArgumentParser:
    parser = StrictParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    for p in positionals:
        parser.add_argument(p.name, nargs=p.nargs, help=p.help)
    if cls is not None:
        add_settings(parser, cls)
    return parser


def call_from_argv(func: Callable[..., Any], argv: Sequence[str] | None = None, prog: str | None = None) -> Any:
    """Call ``func`` with a strict command line made from its signature (scripts: benchmarks).

    Parameters without a default are positional; the others become options, typed by their
    annotations as for a settings dataclass.
    """
    sig, hints = inspect.signature(func), typing.get_type_hints(func)
    positional = [Positional(n, n) for n, p in sig.parameters.items() if p.default is inspect.Parameter.empty]
    fields = [(n, hints[n], dataclasses.field(default=p.default)) for n, p in sig.parameters.items()
              if p.default is not inspect.Parameter.empty]
    options = dataclasses.make_dataclass(f"{func.__name__}_options", fields, frozen=True)
    doc = (func.__doc__ or "").strip()
    args = parser_for(prog or func.__module__, doc, options, positional).parse_args(argv)
    return func(*(getattr(args, p.name) for p in positional), **dataclasses.asdict(settings_from(options, args)))


def settings_from(cls: type[S], namespace: argparse.Namespace) -> S:
    """The dataclass built from the parsed options (its ``__post_init__`` checks ranges)."""
    return cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls) if f.init})
