"""Teacher-embedding cache (Fast Knowledge Distillation, Shen & Xing, ECCV 2022).

The teacher is frozen, so its image embeddings for K fixed augmented views of every training
image are computed once. View ``v`` of image ``i`` is reproducible from ``(seed, i, v)``
(``distill.transforms.ViewSampler``), so training replays exactly the view the teacher saw.

Layout of a cache folder (its JSON files are the typed contracts of ``formats.cache``)::

    meta.json            fingerprint, the fields (key) it was computed from, N, K, D, shard size
    text.npy             (C, D) float32 class text embeddings
    shard_00000.npy      (n, K, D) float16 image embeddings of images [start, stop), memory-mapped
    shard_00000.json     {"start", "stop", "bytes", "sha256"}: written after the .npy, marks it done
    val.npy, val.json    (N_val, D) float32 embeddings of the validation images (centre view at the
                         teacher's size), and their record: the teacher diagnostics and calibration
    unlabeled-<fp>/      the unlabeled pool (``data.unlabeled``) when there is one: its own meta.json
                         (fingerprint <fp> of the teacher, the pool's image hashes and its views) and
                         shards of ``teacher.unlabeled_views`` views; the labeled part does not depend on
                         it, so runs with and without a pool (or with another pool) share it

A killed build resumes by skipping shards whose record exists and whose size matches. Loading
checks every shard's size and sha256, so a corrupt file is refused rather than read as garbage.
Under ``torchrun`` each rank builds the shards ``s`` with ``s % world_size == rank``.
What a cache is keyed by (its fingerprint) is ``distill.cache_key``; this module reads and builds it.

Which folder a run uses (by default one keyed by its fingerprint, built on first use) is
``distill.cache_ready``; ``python -m distill cache --config C`` builds it ahead of training.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from distill.cache_key import fingerprint_fields, pool_fingerprint_fields
from distill.config import Config
from distill.data import PROMPTS, CacheViews, EvalImages, load_dataset
from distill.transforms import TargetSpec, ViewSampler, pool_view_sampler, view_sampler
from formats.cache import (CacheKey, CacheMeta, FileRecord, PartKey, PoolCacheKey, TeacherInput, describe_mismatch,
                           fingerprint)
from formats.datasets import ImageSource
from formats.errors import UserError
from formats.files import atomic_write, sha256_file, write_json
from formats.progress import stage


def pool_dir(root: str | Path, fields: PoolCacheKey) -> Path:
    """The unlabeled pool's part of the cache at ``root``: ``unlabeled-<fingerprint>/`` (its shards and meta.json),
    so pools of other images or views sit beside each other and share the labeled part."""
    return Path(root) / f"unlabeled-{fingerprint(fields)[:16]}"


# --------------------------------------------------------------------------- reading

@dataclass
class Shard:
    start: int
    stop: int
    array: np.ndarray  # (n, K, D) float16, memory-mapped


class TeacherCache:
    """A complete, verified cache: ``lookup(indices, views) -> (B, D)`` float32 embeddings."""

    def __init__(self, root: Path, meta: CacheMeta, shards: list[Shard], text: np.ndarray, val: np.ndarray) -> None:
        self.root, self.meta, self.shards = root, meta, shards
        self.text_embeddings = torch.from_numpy(np.array(text, dtype=np.float32))  # (C, D)
        self.val_embeddings = torch.from_numpy(np.array(val, dtype=np.float32))  # (N_val, D)
        self.num_views, self.shard_size = meta.num_views, meta.shard_size

    def train_embeddings(self) -> torch.Tensor:
        """Every cached view of every training image: (N, K, D) float32."""
        return torch.from_numpy(np.concatenate([s.array for s in self.shards]).astype(np.float32))

    def lookup(self, indices: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        rows = [self.shards[i // self.shard_size].array[i % self.shard_size, v]
                for i, v in zip(indices.tolist(), views.tolist())]
        return torch.from_numpy(np.stack(rows).astype(np.float32))  # (B, D)


def open_cache(root: str | Path, expected: CacheKey, verify: bool = True) -> TeacherCache:
    """Open the cache at ``root`` for a run whose key is ``expected`` (``fingerprint_fields``); refuse others."""
    return _open(Path(root), expected, verify, labeled=True)


def open_pool_cache(root: str | Path, expected: PoolCacheKey, verify: bool = True) -> TeacherCache:
    """The unlabeled pool's part of the cache at ``root`` (``pool_dir``): shards only, no text or val."""
    return _open(pool_dir(root, expected), expected, verify, labeled=False)


def _open(root: Path, expected: PartKey, verify: bool, labeled: bool) -> TeacherCache:
    top = root if labeled else root.parent
    rebuild = "build it with: python -m distill cache --config <your config> teacher.cache=" + str(top)
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise UserError(f"teacher cache {root} does not exist (no meta.json): {rebuild}")
    meta = CacheMeta.read(meta_path, f"{rebuild} (into a new folder)")
    if meta.fingerprint != fingerprint(expected):
        raise UserError(f"teacher cache {root} was built for another setup and is refused "
                        f"({describe_mismatch(meta.fields, expected)}): {rebuild} "
                        f"(into a new folder), or set teacher.cache to the matching cache")
    shards = [_open_shard(root, s, meta, verify, rebuild) for s in range(meta.num_shards)]
    if not labeled:
        empty = np.zeros((0, meta.dim), np.float32)
        return TeacherCache(root, meta, shards, empty, empty)
    text = np.load(root / "text.npy")
    val = np.load(_checked_file(root, "val", verify, rebuild)[1])
    return TeacherCache(root, meta, shards, text, val)


def _checked_file(root: Path, stem: str, verify: bool, rebuild: str) -> tuple[FileRecord, Path]:
    """The record of ``<stem>.npy`` after checking the file's size (and sha256 when ``verify``)."""
    record_path, npy = root / f"{stem}.json", root / f"{stem}.npy"
    if not record_path.is_file() or not npy.is_file():
        raise UserError(f"teacher cache {root} is incomplete ({npy.name} missing): "
                        f"resume the build with the same command: {rebuild}")
    record = FileRecord.read(record_path, f"delete {record_path.name} and {npy.name} and resume the build: {rebuild}")
    if npy.stat().st_size != record.bytes or (verify and sha256_file(npy) != record.sha256):
        raise UserError(f"teacher cache file {npy} is corrupt (size or checksum differs from its record): "
                        f"delete {npy.name} and {record_path.name} and resume the build: {rebuild}")
    return record, npy


def _open_shard(root: Path, s: int, meta: CacheMeta, verify: bool, rebuild: str) -> Shard:
    record, npy = _checked_file(root, f"shard_{s:05d}", verify, rebuild)
    if record.start is None or record.stop is None:
        raise UserError(f"teacher cache record {npy.with_suffix('.json')} names no image range: {rebuild}")
    array = np.load(npy, mmap_mode="r")
    expected_shape = (record.stop - record.start, meta.num_views, meta.dim)
    if array.shape != expected_shape or array.dtype != np.float16:
        raise UserError(f"teacher cache file {npy} has shape {array.shape}, expected {expected_shape}: {rebuild}")
    return Shard(record.start, record.stop, array)


# --------------------------------------------------------------------------- building

def build_cache(cfg: Config, rank: int = 0, world: int = 1, device: torch.device | None = None) -> Path:
    """Compute the missing shards of the folder ``cfg.teacher.cache`` (those of this rank under torchrun), and
    of its unlabeled part (``root/unlabeled-<fp>``) when ``data.unlabeled`` names a pool."""
    from distill.pool import load_pool
    from distill.teacher import Teacher

    assert cfg.teacher.cache not in ("auto", "online"), "a folder: distill.cache_ready.with_cache_folder"
    root = Path(cfg.teacher.cache)
    splits = load_dataset(cfg.data)
    pool = load_pool(cfg.data, splits, verbose=rank == 0)
    fields = fingerprint_fields(cfg, splits)
    _check_or_claim(root, fields, rank)
    pool_fields = pool_fingerprint_fields(cfg, pool.hashes) if pool else None
    if pool_fields is not None:
        _check_or_claim(pool_dir(root, pool_fields), pool_fields, rank)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.teacher.cache_seed)  # random-weight teachers ("none") must agree across ranks
    teacher = Teacher(cfg.teacher.model, cfg.teacher.pretrained, device)
    if rank == 0:
        text = teacher.encode_classes(splits.class_names, cfg.data.prompts or PROMPTS[cfg.data.name])
        _save_npy(root / "text.npy", text.cpu().numpy().astype(np.float32))
        if not _record_done(root, "val"):
            _save_with_record(root, "val", eval_embeddings(teacher, splits.val, cfg, "teacher cache: validation"))
    _build_part(root, fields, splits.train, cfg.teacher.cache_views, view_sampler(cfg.data, cfg.teacher.cache_seed),
                teacher, cfg, rank, world)
    if pool is not None and pool_fields is not None:
        sampler = pool_view_sampler(cfg.data, cfg.teacher.cache_seed)
        _build_part(pool_dir(root, pool_fields), pool_fields, pool.source, cfg.teacher.unlabeled_views, sampler, teacher, cfg,
                    rank, world)
    return root


def _build_part(root: Path, fields: PartKey, source: ImageSource, k: int, sampler: ViewSampler, teacher,
                cfg: Config, rank: int, world: int) -> None:
    """meta.json (rank 0, once: a resumed build keeps it) and the missing shards of this rank: K views of
    every image of ``source``."""
    n, size = len(source), cfg.teacher.cache_shard_size
    num_shards = (n + size - 1) // size
    if rank == 0 and not (root / "meta.json").is_file():  # one there has this key (_check_or_claim)
        target = teacher.target
        meta = CacheMeta(fingerprint=fingerprint(fields), fields=fields, num_images=n, num_views=k,
                         dim=teacher.embed_dim, shard_size=size, num_shards=num_shards,
                         teacher_input=TeacherInput(target.size, target.interpolation, tuple(target.mean),
                                                    tuple(target.std)))
        write_json(root / "meta.json", meta.to_dict())
    todo = [s for s in range(rank, num_shards, world) if not _record_done(root, f"shard_{s:05d}")]
    if todo:
        name = "teacher cache" if isinstance(fields, CacheKey) else "teacher cache: unlabeled pool"
        _build_shards(root, todo, n, size, k, teacher, source, sampler, cfg, name if rank == 0 else None)


def _check_or_claim(root: Path, fields: PartKey, rank: int) -> None:
    """A folder holding another setup's cache is refused, never overwritten."""
    meta_path = root / "meta.json"
    if meta_path.is_file():
        meta = CacheMeta.read(meta_path, "delete the folder (an interrupted or foreign cache) or choose another "
                                         "teacher.cache folder")
        if meta.fingerprint != fingerprint(fields):
            raise UserError(f"{root} holds a teacher cache for another setup "
                            f"({describe_mismatch(meta.fields, fields)}): choose another teacher.cache folder")
    root.mkdir(parents=True, exist_ok=True)


def _record_done(root: Path, stem: str) -> bool:
    """A finished piece: its record parses and names the file's size (a torn record means: build it again)."""
    record, npy = root / f"{stem}.json", root / f"{stem}.npy"
    if not (record.is_file() and npy.is_file()):
        return False
    try:
        return npy.stat().st_size == FileRecord.read(record, "").bytes
    except UserError:  # torn or foreign record
        return False


def teacher_eval_spec(target: TargetSpec) -> dict[str, Any]:
    """The teacher's own evaluation view: shorter side to its size, centre crop, its normalisation."""
    return {"input_size": [target.size, target.size], "resize_size": target.size,
            "interpolation": target.interpolation, "mean": list(target.mean), "std": list(target.std)}


def eval_embeddings(teacher, source: ImageSource, cfg: Config, progress: str | None = None) -> np.ndarray:
    """(N, D) float32 teacher embeddings of the centre view of every image of ``source``; ``progress``: the
    name its progress lines go under (``formats.progress``), None: silent."""
    # Its own generator: an evaluation pass must not move the global RNG that initialises the heads.
    loader = DataLoader(EvalImages(source, teacher_eval_spec(teacher.target)), batch_size=cfg.teacher.cache_batch_size,
                        num_workers=cfg.data.workers, generator=torch.Generator())
    with _stage(progress, len(source), "image") as step:
        return np.concatenate([_encode(teacher, x, step) for x, _ in loader]).astype(np.float32)


CPU_PIECE = 32  # views the teacher embeds at a time on a CPU: the progress moves every few seconds


def _encode(teacher, x: torch.Tensor, step) -> np.ndarray:
    """(B, D) embeddings of the views ``x``; on a CPU in pieces, each counted on ``step`` when done."""
    out = []
    for piece in x.split(len(x) if teacher.device.type == "cuda" else CPU_PIECE):
        out.append(teacher.encode_images(piece).cpu().numpy())  # (b, D)
        step.advance(len(piece))
    return np.concatenate(out)


def _stage(name: str | None, total: int, unit: str):  # formats.progress.stage; no name: counted, not shown
    return stage(name or "", total, unit, show=bool(name))


def _build_shards(root: Path, todo: list[int], n: int, size: int, k: int, teacher, source: ImageSource,
                  sampler: ViewSampler, cfg: Config, progress: str | None) -> None:
    """One DataLoader over every view of the shards in ``todo``; each shard is saved once complete.

    A loader per shard would start its workers again for every shard and, with batches as large as
    a shard, keep only a couple of them busy; one loader keeps all of them busy throughout.
    """
    bounds = {s: (s * size, min((s + 1) * size, n)) for s in todo}
    items = [(i, v) for s in todo for i in range(*bounds[s]) for v in range(k)]
    loader = DataLoader(CacheViews(source, sampler, teacher.target, items), batch_size=cfg.teacher.cache_batch_size,
                        num_workers=cfg.data.workers, pin_memory=teacher.device.type == "cuda")
    open_shards: dict[int, tuple[np.ndarray, list[int]]] = {}  # s -> ((n_s, K, D) buffer, [views filled])
    t0, dim = time.perf_counter(), teacher.embed_dim
    with _stage(progress, len(items), "view") as step:
        for x, idx, view in loader:
            emb = _encode(teacher, x, step).astype(np.float16)  # (B, D)
            idx, view = idx.numpy(), view.numpy()
            for s in np.unique(idx // size).tolist():
                start, stop = bounds[s]
                buf, filled = open_shards.setdefault(s, (np.zeros((stop - start, k, dim), np.float16), [0]))
                mask = idx // size == s
                buf[idx[mask] - start, view[mask]] = emb[mask]
                filled[0] += int(mask.sum())
                if filled[0] == (stop - start) * k:  # items arrive in order: shards complete one by one
                    _save_shard(root, s, start, stop, open_shards.pop(s)[0], time.perf_counter() - t0)
                    t0 = time.perf_counter()
    if open_shards:  # every view of every shard was asked for: a gap here is a bug, never a quiet hole
        raise RuntimeError(f"teacher cache shards {sorted(open_shards)} were left incomplete")


def _save_shard(root: Path, s: int, start: int, stop: int, out: np.ndarray, seconds: float) -> None:
    _save_with_record(root, f"shard_{s:05d}", out, start, stop, seconds)


def _save_with_record(root: Path, stem: str, out: np.ndarray, start: int | None = None, stop: int | None = None,
                      seconds: float | None = None) -> None:
    """The array first, then its record: an array without a record is redone on resume."""
    _save_npy(npy := root / f"{stem}.npy", out)
    record = FileRecord(bytes=npy.stat().st_size, sha256=sha256_file(npy), start=start, stop=stop, seconds=seconds)
    write_json(root / f"{stem}.json", record.to_dict())


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array))
