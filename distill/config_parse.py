"""Strict conversion between raw YAML data and the config dataclasses of ``distill.config``.

``from_dict`` builds a dataclass from a mapping (unknown keys get a "did you mean", wrong types
name the key; a field may spread its entries over keys of their own, ``settable_keys``), ``to_dict``
is its inverse, and ``split_override`` / ``set_dotted`` turn ``train.epochs=20`` style overrides
into nested mapping entries.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml

from formats.errors import UserError


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    where = "YAML"  # what the error names: set per file

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise UserError(f"{self.where}: key {key!r} is given twice (lines {seen[key]} and {line}): keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml_text(path: Path) -> Any:
    """A YAML file read as UTF-8 (a UTF-8 byte-order mark allowed), keys unique per mapping;
    one UserError naming the file otherwise."""
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise UserError(f"config file {path} is UTF-16 text: save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"config file {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
                        f"save it as UTF-8") from None
    loader = _StrictLoader(text)
    loader.where = f"config file {path}"
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    finally:
        loader.dispose()


def split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise UserError(f"override {text!r} is not key=value: write it like train.epochs=20")
    key, value = text.split("=", 1)
    try:
        return key.strip().lstrip("-"), yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        return key.strip().lstrip("-"), value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"override {key}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def from_dict(cls: type, raw: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, strictly: unknown keys and wrong types fail."""
    where = prefix.rstrip(".") or "the config"
    if not isinstance(raw, Mapping):
        raise UserError(f"config key {where}: expected a mapping, got {type(raw).__name__}")
    keys = settable_keys(cls)
    for key in raw:
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else f"; valid keys: {', '.join(keys)}"
            raise UserError(f"unknown config key {prefix}{key}{hint}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        name, entry = keys[key]
        if entry is None:
            kwargs[name] = _coerce(hints[name], value, f"{prefix}{key}")
        else:  # a flat key: one (entry, value) pair of a tuple field
            kind = typing.get_args(typing.get_args(hints[name])[0])[1]
            kwargs[name] = (*kwargs.get(name, ()), (entry, _coerce(kind, value, f"{prefix}{key}")))
    return cls(**kwargs)


def settable_keys(cls: type) -> dict[str, tuple[str, str | None]]:
    """``key -> (field, entry)`` for every key of dataclass ``cls``, in declaration order: a field's own name
    (entry None), or, for a field with ``metadata={"flat": (prefix, defaults)}`` (a tuple of (name, value)
    pairs), one key ``<prefix><name>`` per name of ``defaults()`` (e.g. ``w_vis`` of ``method.weights``)."""
    keys: dict[str, tuple[str, str | None]] = {}
    for f in dataclasses.fields(cls):
        if "flat" in f.metadata:
            key_prefix, defaults = f.metadata["flat"]
            keys.update({f"{key_prefix}{entry}": (f.name, entry) for entry in defaults()})
        else:
            keys[f.name] = (f.name, None)
    return keys


def _coerce(tp: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key + ".")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, key)
    if origin is tuple:
        return _coerce_tuple(tp, value, key)
    return _coerce_scalar(tp, value, key)


def _coerce_tuple(tp: Any, value: Any, key: str) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise UserError(f"config key {key}: expected a list, got {value!r}")
    args = typing.get_args(tp)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce_scalar(args[0], v, key) for v in value)
    if len(value) != len(args):
        raise UserError(f"config key {key}: expected {len(args)} values, got {len(value)}")
    return tuple(_coerce_scalar(a, v, key) for a, v in zip(args, value))


def _coerce_scalar(tp: type, value: Any, key: str) -> Any:
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        except ValueError:
            pass
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. a numeric run name
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise UserError(f"config key {key}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (lists instead of tuples) for YAML/JSON and checkpoints; a flat field's entries as
    their own keys (``w_vis``), as ``from_dict`` reads them."""
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if "flat" in f.metadata:
            out.update({f"{f.metadata['flat'][0]}{entry}": plain(v) for entry, v in value})
        elif dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        else:
            out[f.name] = plain(value)
    return out


def dotted_overrides(argv: list[str]) -> list[str]:
    """``--train.epochs=3`` and ``--train.epochs 3`` mean ``train.epochs=3`` (a config key, not an option);
    an argument whose dotted part is no ``section.key`` (``"--seconds 0.5"``, an option string's value)
    passes through untouched."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        key = arg[2:].split("=", 1)[0]
        if arg.startswith("--") and "." in key and all(part.isidentifier() for part in key.split(".")):
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


def describe_keys(cls: type, prefix: str = "", values: Any = None) -> list[str]:
    """``section.key (type) = value`` for every settable key of the config dataclass ``cls``, for --help: the
    defaults, or the values of ``values`` (a loaded config of type ``cls``)."""
    lines: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines += describe_keys(tp, f"{prefix}{f.name}.", None if values is None else getattr(values, f.name))
        elif "flat" in f.metadata:  # one key per entry, e.g. method.w_vis
            key_prefix, defaults = f.metadata["flat"]
            given = {} if values is None else dict(getattr(values, f.name))
            kind = typing.get_args(typing.get_args(tp)[0])[1]
            lines += [f"{prefix}{key_prefix}{name} ({kind.__name__}) = {given.get(name, default)!r}"
                      for name, default in defaults().items()]
        else:
            value = getattr(values, f.name) if values is not None else (
                f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[misc]
            name = getattr(tp, "__name__", str(tp).replace("typing.", ""))
            lines.append(f"{prefix}{f.name} ({name}) = {value!r}")
    return lines
