"""Teacher-cache identity: the key of everything that determines a cache's contents, from a config.

``fingerprint_fields`` gives the labeled part's key (teacher files, training and validation file
lists, classes, prompts, view settings), ``pool_fingerprint_fields`` the unlabeled pool's; both are
typed contracts of ``formats.cache`` (``CacheKey``, ``PoolCacheKey``), which hashes them
(``fingerprint``) and says which fields differ when a cache built for another setup is refused.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from distill.config import Config
from distill.data import PROMPTS
from formats.cache import CacheKey, PoolCacheKey, TeacherFile
from formats.datasets import DatasetSplits, ImageSource, SubsetSource

FORMAT_VERSION = 2  # 2: views keyed by teacher.cache_seed, val.npy, teacher files identified


def fingerprint_fields(cfg: Config, splits: DatasetSplits) -> CacheKey:
    """Everything that determines the labeled part's contents (shown field by field on a mismatch).

    Neither the student nor ``train.seed`` is part of it: one cache serves every seed and student.
    """
    train, val, root = splits.train, splits.val, Path(cfg.data.root)
    mixed = cfg.data.mix != "none"  # blended views change the cached views; a cache without them keeps its key
    return CacheKey(
        format=FORMAT_VERSION, teacher_model=cfg.teacher.model, teacher_pretrained=cfg.teacher.pretrained,
        teacher_files=_teacher_identity(cfg), data_name=cfg.data.name,
        data_train_images=len(train), data_train_files_sha256=_source_identity(train, root),
        data_val_images=len(val), data_val_files_sha256=_source_identity(val, root),
        data_classes_sha256=_sha256_text("\n".join(splits.class_names)),
        data_prompts=tuple(cfg.data.prompts or PROMPTS[cfg.data.name]), data_crop_scale_min=cfg.data.crop_scale_min,
        data_hflip=cfg.data.hflip, teacher_cache_seed=cfg.teacher.cache_seed,
        teacher_cache_views=cfg.teacher.cache_views, teacher_cache_shard_size=cfg.teacher.cache_shard_size,
        data_mix=cfg.data.mix if mixed else None, data_mix_prob=cfg.data.mix_prob if mixed else None,
        data_mix_alpha=cfg.data.mix_alpha if mixed else None)


def pool_fingerprint_fields(cfg: Config, hashes: list[str]) -> PoolCacheKey:
    """What the unlabeled part of a cache depends on: the teacher, the pool's images (their content
    hashes, in order), its views. Neither labels nor the labeled split: every arm shares it."""
    return PoolCacheKey(
        format=FORMAT_VERSION, teacher_model=cfg.teacher.model, teacher_pretrained=cfg.teacher.pretrained,
        teacher_files=_teacher_identity(cfg), data_unlabeled_images=len(hashes),
        data_unlabeled_sha256=_sha256_text("\n".join(hashes)),
        data_unlabeled_crop_scale_min=cfg.data.unlabeled_crop_scale_min, data_hflip=cfg.data.hflip,
        teacher_cache_seed=cfg.teacher.cache_seed, teacher_unlabeled_views=cfg.teacher.unlabeled_views,
        teacher_cache_shard_size=cfg.teacher.cache_shard_size)


def _teacher_identity(cfg: Config) -> tuple[TeacherFile, ...]:
    return tuple(_file_identity(f) for f in teacher_files(cfg.teacher.model, cfg.teacher.pretrained))


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def teacher_files(model: str, pretrained: str) -> list[str]:
    """The local files that determine the teacher: weights file, config file or local-dir folder."""
    if model.startswith("local-dir:"):
        folder = Path(model[len("local-dir:"):])
        return sorted(str(p) for p in folder.glob("*") if p.suffix in (".json", ".safetensors", ".bin", ".pth"))
    return [f for f in (model, pretrained) if os.path.isfile(f)]


def _file_identity(path: str) -> TeacherFile:
    """Size and hash of the first and last MiB: cheap for multi-GB weights, catches a swap."""
    h, size = hashlib.sha256(), os.path.getsize(path)
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return TeacherFile(name=Path(path).name, bytes=size, sha256_head_tail=h.hexdigest())


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
