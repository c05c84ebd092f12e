"""Teacher-cache identity: the fingerprint of everything that determines a cache's contents.

``fingerprint_fields`` lists it as readable data (teacher files, training and validation file
lists, classes, prompts, view settings), ``fingerprint`` hashes it, and ``describe_mismatch``
says which fields differ when ``distill.cache`` refuses a cache built for another setup.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from distill.config import Config
from distill.data import PROMPTS
from formats.datasets import DatasetSplits, ImageSource, SubsetSource

FORMAT_VERSION = 2  # 2: views keyed by teacher.cache_seed, val.npy, teacher files identified


def fingerprint_fields(cfg: Config, splits: DatasetSplits) -> dict[str, Any]:
    """Everything that determines the cache's contents, as readable data (shown on a mismatch).

    Neither the student nor ``train.seed`` is part of it: one cache serves every seed and student.
    """
    train, val, class_names = splits.train, splits.val, splits.class_names
    # blended views change the cached views; a cache without them keeps its fingerprint
    mix = {} if cfg.data.mix == "none" else {"data.mix": cfg.data.mix, "data.mix_prob": cfg.data.mix_prob,
                                             "data.mix_alpha": cfg.data.mix_alpha}
    return {
        "format": FORMAT_VERSION,
        "teacher.model": cfg.teacher.model,
        "teacher.pretrained": cfg.teacher.pretrained,
        "teacher.files": [_file_identity(f) for f in teacher_files(cfg.teacher.model, cfg.teacher.pretrained)],
        "data.name": cfg.data.name,
        "data.train_images": len(train),
        "data.train_files_sha256": _source_identity(train, Path(cfg.data.root)),
        "data.val_images": len(val),
        "data.val_files_sha256": _source_identity(val, Path(cfg.data.root)),
        "data.classes_sha256": _sha256_text("\n".join(class_names)),
        "data.prompts": list(cfg.data.prompts or PROMPTS[cfg.data.name]),
        "data.crop_scale_min": cfg.data.crop_scale_min,
        "data.hflip": cfg.data.hflip,
        "teacher.cache_seed": cfg.teacher.cache_seed,
        "teacher.cache_views": cfg.teacher.cache_views,
        "teacher.cache_shard_size": cfg.teacher.cache_shard_size,
        **mix,
    }


def pool_fingerprint_fields(cfg: Config, hashes: list[str]) -> dict[str, Any]:
    """What the unlabeled part of a cache depends on: the teacher, the pool's images (their content
    hashes, in order), its views. Neither labels nor the labeled split: every arm shares it."""
    return {
        "format": FORMAT_VERSION,
        "teacher.model": cfg.teacher.model,
        "teacher.pretrained": cfg.teacher.pretrained,
        "teacher.files": [_file_identity(f) for f in teacher_files(cfg.teacher.model, cfg.teacher.pretrained)],
        "data.unlabeled_images": len(hashes),
        "data.unlabeled_sha256": _sha256_text("\n".join(hashes)),
        "data.unlabeled_crop_scale_min": cfg.data.unlabeled_crop_scale_min,
        "data.hflip": cfg.data.hflip,
        "teacher.cache_seed": cfg.teacher.cache_seed,
        "teacher.unlabeled_views": cfg.teacher.unlabeled_views,
        "teacher.cache_shard_size": cfg.teacher.cache_shard_size,
    }


def fingerprint(fields: dict[str, Any]) -> str:
    return _sha256_text(json.dumps(fields, sort_keys=True))


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def teacher_files(model: str, pretrained: str) -> list[str]:
    """The local files that determine the teacher: weights file, config file or local-dir folder."""
    if model.startswith("local-dir:"):
        folder = Path(model[len("local-dir:"):])
        return sorted(str(p) for p in folder.glob("*") if p.suffix in (".json", ".safetensors", ".bin", ".pth"))
    return [f for f in (model, pretrained) if os.path.isfile(f)]


def _file_identity(path: str) -> dict[str, Any]:
    """Size and hash of the first and last MiB: cheap for multi-GB weights, catches a swap."""
    h, size = hashlib.sha256(), os.path.getsize(path)
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return {"name": Path(path).name, "bytes": size, "sha256_head_tail": h.hexdigest()}


def _source_identity(source: ImageSource, root: Path) -> str:
    """Hash of (file relative to the data root, label) for every image, in index order."""
    lines = []
    for i in range(len(source)):
        base, j = source, i
        while isinstance(base, SubsetSource):
            base, j = base.source, base.indices[j]
        name = str(base.paths[j].relative_to(root)) if hasattr(base, "paths") else f"#{j}"
        lines.append(f"{name}\t{source.labels[i]}")
    return _sha256_text("\n".join(lines))


def describe_mismatch(cached: dict[str, Any], expected: dict[str, Any]) -> str:
    diffs = [f"{k}: cache {cached.get(k)!r} vs config {expected.get(k)!r}"
             for k in sorted(set(cached) | set(expected)) if cached.get(k) != expected.get(k)]
    return "; ".join(diffs[:6]) + (f" (+{len(diffs) - 6} more)" if len(diffs) > 6 else "")
