"""The teacher cache's files: ``meta.json`` (what was cached, for which setup) and the records of its arrays.

``python -m distill cache`` writes them; training (another process, often another machine) reads
them and refuses a cache whose fingerprint differs from its own setup. Every file is read strictly:
an unreadable, incomplete or unknown file is one error naming the file and the fix, never a
traceback.

    meta.json           CacheMeta: schema_version, fingerprint, fields (a CacheKey, or a PoolCacheKey for
                        the unlabeled pool's part), N, K, D, shard size and count, teacher_input
    shard_00000.json    FileRecord of shard_00000.npy: start, stop, seconds, bytes, sha256
    val.json            FileRecord of val.npy: bytes, sha256

The key's JSON names are dotted config keys (``"teacher.model"``); ``fingerprint(key)`` is the
sha256 of that JSON with sorted keys, so caches written before these classes keep their identity.
``meta.json`` files written before ``schema_version`` existed are version 1 (the same layout).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from formats.errors import UserError
from formats.files import read_json_object
from formats.schema import typed

SCHEMA_VERSION = 1


def _key(name: str) -> Any:
    return field(metadata={"key": name})


def _optional(name: str) -> Any:
    return field(default=None, metadata={"key": name})


@dataclass(frozen=True)
class TeacherFile:
    """A local file the teacher is made of, identified cheaply (size, hash of its first and last MiB)."""

    name: str
    bytes: int
    sha256_head_tail: str


@dataclass(frozen=True)
class PartKey:
    """What every part of a cache (labeled, unlabeled pool) depends on: the format and the teacher."""

    format: int = _key("format")  # what a cache holds (distill.cache_key.FORMAT_VERSION)
    teacher_model: str = _key("teacher.model")
    teacher_pretrained: str = _key("teacher.pretrained")
    teacher_files: tuple[TeacherFile, ...] = _key("teacher.files")


@dataclass(frozen=True)
class CacheKey(PartKey):
    """Everything the labeled part's embeddings depend on; neither the student nor ``train.seed``."""

    data_name: str = _key("data.name")
    data_train_images: int = _key("data.train_images")
    data_train_files_sha256: str = _key("data.train_files_sha256")  # (file, label) of every image, in order
    data_val_images: int = _key("data.val_images")
    data_val_files_sha256: str = _key("data.val_files_sha256")
    data_classes_sha256: str = _key("data.classes_sha256")
    data_prompts: tuple[str, ...] = _key("data.prompts")
    data_crop_scale_min: float = _key("data.crop_scale_min")
    data_hflip: bool = _key("data.hflip")
    teacher_cache_seed: int = _key("teacher.cache_seed")
    teacher_cache_views: int = _key("teacher.cache_views")
    teacher_cache_shard_size: int = _key("teacher.cache_shard_size")
    data_mix: str | None = _optional("data.mix")  # blended views only (absent: none, the older caches' identity)
    data_mix_prob: float | None = _optional("data.mix_prob")
    data_mix_alpha: float | None = _optional("data.mix_alpha")


@dataclass(frozen=True)
class PoolCacheKey(PartKey):
    """Everything the unlabeled pool's part depends on: the teacher, the pool's images (content hashes, in
    order), its views; neither labels nor the labeled split."""

    data_unlabeled_images: int = _key("data.unlabeled_images")
    data_unlabeled_sha256: str = _key("data.unlabeled_sha256")
    data_unlabeled_crop_scale_min: float = _key("data.unlabeled_crop_scale_min")
    data_hflip: bool = _key("data.hflip")
    teacher_cache_seed: int = _key("teacher.cache_seed")
    teacher_unlabeled_views: int = _key("teacher.unlabeled_views")
    teacher_cache_shard_size: int = _key("teacher.cache_shard_size")


def key_fields(key: PartKey) -> dict[str, Any]:
    """The key as its JSON object (dotted names; absent optional fields left out)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(key):
        value = getattr(key, f.name)
        if value is not None:
            out[f.metadata["key"]] = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                                      for v in value] if isinstance(value, tuple) else value
    return out


def read_key(d: Any, where: str, fix: str) -> PartKey:
    """A key from its JSON object: a PoolCacheKey if it names the unlabeled images, else a CacheKey."""
    if not isinstance(d, dict):
        raise UserError(f"{where} must be a JSON object, not {type(d).__name__}: {fix}")
    cls = PoolCacheKey if "data.unlabeled_sha256" in d else CacheKey
    names = {f.metadata["key"]: f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise UserError(f"{where} has an unknown field {unknown[0]!r}: it was written by a newer toolkit or edited: "
                        f"{fix}")
    required = [f.metadata["key"] for f in dataclasses.fields(cls) if f.default is not None]
    missing = [k for k in required if k not in d]
    if missing:
        raise UserError(f"{where} lacks the field {missing[0]!r}: {fix}")
    return typed(cls, {names[k]: v for k, v in d.items()}, where, fix=fix)


def fingerprint(key: PartKey) -> str:
    """sha256 of the key's JSON with sorted keys: a cache's identity."""
    return hashlib.sha256(json.dumps(key_fields(key), sort_keys=True).encode()).hexdigest()


def describe_mismatch(cached: PartKey, expected: PartKey) -> str:
    """The fields that differ (at most six), e.g. ``teacher.cache_seed: cache 0 vs config 5``."""
    old, new = key_fields(cached), key_fields(expected)
    diffs = [f"{k}: cache {old.get(k)!r} vs config {new.get(k)!r}"
             for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return "; ".join(diffs[:6]) + (f" (+{len(diffs) - 6} more)" if len(diffs) > 6 else "")


@dataclass(frozen=True)
class TeacherInput:
    """The view the teacher embedded: its input size, resize interpolation and normalisation."""

    size: int
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class CacheMeta:
    """``meta.json`` of one part of a cache: written once, before its shards, by rank 0 of the build."""

    fingerprint: str  # fingerprint(fields)
    fields: PartKey  # CacheKey or PoolCacheKey: everything the cached embeddings depend on (teacher, data, views)
    num_images: int  # N images of this part
    num_views: int  # K augmented views per image
    dim: int  # D, the teacher's embedding width
    shard_size: int  # images per shard file
    num_shards: int
    teacher_input: TeacherInput
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def read(cls, path: Path, fix: str) -> "CacheMeta":
        """``path`` read strictly; another schema version is refused, naming ``fix`` (rebuild it)."""
        d = read_json_object(path, fix)
        version = d.get("schema_version", 1)  # written before the field existed: version 1, the same layout
        if version != SCHEMA_VERSION:
            raise UserError(f"{path} has schema version {version!r}, this toolkit reads {SCHEMA_VERSION}: {fix}")
        nested = {"fields": lambda v: read_key(v, f"{path}: fields", fix),
                  "teacher_input": lambda v: typed(TeacherInput, v, f"{path}: teacher_input", fix=fix)}
        meta = typed(cls, {k: nested[k](v) if k in nested else v for k, v in d.items()}, str(path), fix=fix)
        if meta.fingerprint != fingerprint(meta.fields):
            raise UserError(f"{path}: its fingerprint does not match its fields (edited?): {fix}")
        return meta

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "fingerprint": self.fingerprint,
                "fields": key_fields(self.fields), "num_images": self.num_images, "num_views": self.num_views,
                "dim": self.dim, "shard_size": self.shard_size, "num_shards": self.num_shards,
                "teacher_input": {**dataclasses.asdict(self.teacher_input), "mean": list(self.teacher_input.mean),
                                  "std": list(self.teacher_input.std)}}


@dataclass(frozen=True)
class FileRecord:
    """The record written after an array file (``<stem>.npy`` -> ``<stem>.json``): it marks the file done."""

    bytes: int  # the .npy file's size
    sha256: str
    start: int | None = None  # shards: the images [start, stop) they hold
    stop: int | None = None
    seconds: float | None = None  # shards: how long the teacher took

    @classmethod
    def read(cls, path: Path, fix: str) -> "FileRecord":
        return typed(cls, read_json_object(path, fix), str(path), fix=fix)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
