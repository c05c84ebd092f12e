"""The teacher cache's ``meta.json``: what was cached, for which setup (the fingerprint).

``python -m distill cache`` writes it; training reads it, and refuses a cache whose fingerprint
differs from its own setup. Read strictly: an unreadable or incomplete meta.json is one error
naming the file and the fix, never a traceback.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from formats.files import read_json_object
from formats.schema import typed


@dataclass(frozen=True)
class CacheMeta:
    fingerprint: str  # sha256 of ``fields``
    fields: dict[str, Any]  # everything the cached embeddings depend on (teacher, data, views, seed)
    num_images: int  # N training images
    num_views: int  # K augmented views per image
    dim: int  # D, the teacher's embedding width
    shard_size: int  # images per shard file
    num_shards: int
    teacher_input: dict[str, Any]  # the teacher's input size and normalisation

    @classmethod
    def read(cls, path: Path, fix: str) -> "CacheMeta":
        return typed(cls, read_json_object(path, fix), str(path), fix=fix)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
