"""Dicts read from JSON into frozen dataclasses, every field checked against its annotation.

One checker for every file format: a missing field, a field of the wrong type or an unknown field
is one ``UserError`` naming the field and the fix. Fields typed ``X | None`` with default ``None``
may be absent (``None`` means "absent", never a guessed value); the others are required.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping

from formats.errors import UserError


def typed(cls: type, d: Any, where: str, legacy: Mapping[type, frozenset[str]] | None = None, fix: str = "") -> Any:
    """``cls(**d)`` with every field checked; keys in ``legacy[cls]`` are read and dropped."""
    legacy = legacy or {}
    fix = f": {fix}" if fix else ""
    if not isinstance(d, dict):
        raise UserError(f"{where} must be a JSON object, not {type(d).__name__}{fix}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields) - legacy.get(cls, frozenset()))
    if unknown:
        raise UserError(f"{where} has an unknown field {unknown[0]!r}: it was written by a newer toolkit or "
                        f"edited{fix}")
    values = {}
    for name, f in fields.items():
        if name not in d:
            if f.default is dataclasses.MISSING:
                raise UserError(f"{where} lacks the field {name!r}{fix}")
            continue
        values[name] = _check(d[name], hints[name], f"{where}: {name}", legacy, fix)
    return cls(**values)


def _check(value: Any, kind: Any, where: str, legacy: Mapping[type, frozenset[str]], fix: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _check(value, next(a for a in args if a is not type(None)), where, legacy, fix)
    if origin is tuple:  # tuple[X, ...]: a JSON list of X (dataclasses read field by field)
        if not isinstance(value, list):
            raise UserError(f"{where} must be a list, not {type(value).__name__}{fix}")
        if dataclasses.is_dataclass(args[0]):
            return tuple(typed(args[0], item, f"{where}[{i}]", legacy, fix[2:]) for i, item in enumerate(value))
        return tuple(_check(item, args[0], f"{where}[{i}]", legacy, fix) for i, item in enumerate(value))
    base = origin or kind
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise UserError(f"{where} must be {getattr(base, '__name__', base)}, not {type(value).__name__}{fix}")
    return value
