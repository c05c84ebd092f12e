"""Records: frozen dataclasses read from and written to JSON, strictly, nested at any depth.

``formats.schema.typed`` checks one dataclass's fields; ``from_dict`` does the same for a record
whose fields are records themselves (``X``, ``X | None`` or ``tuple[X, ...]`` with ``X`` a
dataclass), so a missing, mistyped or unknown key anywhere is one error naming the file and the
key's path (``bench.json: device: gpus[0] lacks the field 'name'``). ``check_header`` checks a
file's ``schema`` and ``schema_version`` first, with the fix in the message.

Two ways back to JSON: ``to_dict`` writes every field (``None`` as null: "every key written");
``plain`` leaves ``None`` fields out, for formats whose optional fields mean "absent" (the bundle
manifest: fields added while its schema version stayed 1). Both write tuples as lists, so
``from_dict(cls, to_dict(r), where) == r``. A nested record has no version of its own: the file
that holds it does.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from formats.errors import UserError
from formats.schema import typed

# JSON values of the free-form tables a file may hold (the options an export ran with)
Scalar = str | int | float | bool | None


def check_header(d: Any, schema: str, version: int, where: str, fix: str) -> None:
    """``d`` is a JSON object of ``schema`` at ``version``; anything else is one error with the fix."""
    if not isinstance(d, dict):
        raise UserError(f"{where} must hold a JSON object, not {type(d).__name__}: {fix}")
    if d.get("schema") != schema:
        raise UserError(f"{where} is not a {schema} file (its schema is {d.get('schema')!r}): {fix}")
    if d.get("schema_version") != version:
        raise UserError(f"{where} has schema version {d.get('schema_version')!r}, this toolkit reads "
                        f"{version}: {fix}")


def read_record(path: str | Path, cls: type, schema: str, version: int, fix: str) -> Any:
    """The file at ``path`` as a ``cls`` record: a JSON object of ``schema`` at ``version``, read strictly."""
    from formats.files import read_json_object

    d = read_json_object(Path(path), fix)
    check_header(d, schema, version, str(path), fix)
    return from_dict(cls, d, str(path), fix)


def from_dict(cls: type, d: Any, where: str, fix: str = "",
              legacy: Mapping[type, frozenset[str]] | None = None) -> Any:
    """``cls`` from the JSON object ``d``, its nested records read field by field too."""
    return typed(cls, _nested(cls, d, where, legacy, fix), where, legacy, fix)


def _record_of(kind: Any) -> tuple[type | None, bool]:
    """(the dataclass a field holds, whether it holds a tuple of them); (None, False) for anything else."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        return (item, True) if dataclasses.is_dataclass(item) else (None, False)
    return (kind, False) if dataclasses.is_dataclass(kind) else (None, False)


def _nested(cls: type, d: Any, where: str, legacy: Mapping[type, frozenset[str]] | None, fix: str) -> Any:
    """``d`` with every nested record field read into its dataclass (a tuple's items stay dicts whose
    own nested fields are read: ``typed`` reads tuple items itself)."""
    if not isinstance(d, dict):
        return d  # typed names the problem
    hints = typing.get_type_hints(cls)
    out = dict(d)
    for name, value in d.items():
        record, many = _record_of(hints.get(name))
        if record is None:
            continue
        if many and isinstance(value, list):
            out[name] = [_nested(record, v, f"{where}: {name}[{i}]", legacy, fix) for i, v in enumerate(value)]
        elif not many and isinstance(value, dict):
            out[name] = from_dict(record, value, f"{where}: {name}", fix, legacy)
    return out


def to_dict(value: Any) -> Any:
    """A record (or a tuple, list or dict of them) as JSON values: every field, ``None`` as null."""
    return _json(value, keep_none=True)


def plain(value: Any) -> Any:
    """A record as JSON values with its ``None`` fields left out (absent)."""
    return _json(value, keep_none=False)


def _json(value: Any, keep_none: bool) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json(getattr(value, f.name), keep_none) for f in dataclasses.fields(value)
                if keep_none or getattr(value, f.name) is not None}
    if isinstance(value, (tuple, list)):
        return [_json(v, keep_none) for v in value]
    if isinstance(value, dict):
        return {k: _json(v, keep_none) for k, v in value.items()}
    return value
