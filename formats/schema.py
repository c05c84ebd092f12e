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
        return _check_union(value, args, where, legacy, fix)
    if origin is tuple:  # tuple[X, ...]: a JSON list of X (dataclasses read field by field)
        if not isinstance(value, list):
            raise UserError(f"{where} must be a list, not {type(value).__name__}{fix}")
        return tuple(_item(item, args[0], f"{where}[{i}]", legacy, fix) for i, item in enumerate(value))
    if origin is dict and args:  # dict[str, V]: a JSON object whose every value is a V
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a JSON object, not {type(value).__name__}{fix}")
        return {_check(k, args[0], f"{where} (a key)", legacy, fix): _item(v, args[1], f"{where}: {k}", legacy, fix)
                for k, v in value.items()}
    base = origin or kind
    if base is Any:
        return value
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        what = "a JSON object" if dataclasses.is_dataclass(base) else getattr(base, "__name__", base)
        raise UserError(f"{where} must be {what}, not {type(value).__name__}{fix}")
    return value


def _item(value: Any, kind: Any, where: str, legacy: Mapping[type, frozenset[str]], fix: str) -> Any:
    """One element of a list or object: a dataclass is read field by field, anything else checked."""
    if dataclasses.is_dataclass(kind):
        return typed(kind, value, where, legacy, fix[2:])
    return _check(value, kind, where, legacy, fix)


def _check_union(value: Any, args: tuple, where: str, legacy: Mapping[type, frozenset[str]], fix: str) -> Any:
    """The first member of ``X | Y | None`` that ``value`` is (None only where None is a member)."""
    if value is None and type(None) in args:
        return None
    members = [a for a in args if a is not type(None)]
    if len(members) == 1:
        return _check(value, members[0], where, legacy, fix)
    for member in members:
        try:
            return _check(value, member, where, legacy, fix)
        except UserError:
            continue
    names = " or ".join(getattr(typing.get_origin(m) or m, "__name__", str(m)) for m in members)
    raise UserError(f"{where} must be {names}, not {type(value).__name__}{fix}")
