"""The unlabeled pool: images the teacher teaches on without labels (``data.unlabeled``).

A pool is a folder of images, searched recursively, or a text file listing image paths (one per
line, relative to the file's folder; ``#`` starts a comment). Its images carry no label (-1);
the student learns on them only what the teacher says (``distill.method``).

No leakage: an image of the pool whose bytes (sha256) equal those of a validation or test image
(whose decoded pixels, for sets without files such as torchvision's) is dropped, and the count is printed and recorded, so a pool scraped from the same place as the
test set never inflates the figures. Images of the labeled training split may appear in the pool
(they are the user's images either way).
"""
from __future__ import annotations

import hashlib
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

from distill.config import DataConfig
from formats.datasets import DatasetSplits, ImageSource
from formats.errors import UserError
from formats.labels import IMAGE_SUFFIXES, FileSource

NO_LABEL = -1


@dataclass
class Pool:
    """The pool after the leakage check: its images, and how many were dropped as val/test copies."""

    source: FileSource  # labels all NO_LABEL
    listed: int  # images the folder or list named
    dropped: int  # of them, copies of a validation or test image
    hashes: list[str]  # sha256 of each kept file's bytes, in order (the cache's identity of the pool)


def list_pool(spec: str) -> list[Path]:
    """The image files ``data.unlabeled`` names, in a fixed order (sorted folder walk, or list order)."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        where = f"folder {path} (searched recursively for {', '.join(sorted(IMAGE_SUFFIXES))})"
    elif path.is_file():
        files = _read_list(path)
        where = f"list file {path}"
    else:
        raise UserError(f"data.unlabeled {spec} does not exist: pass a folder of images or a text file with one "
                        f"image path per line")
    if not files:
        raise UserError(f"data.unlabeled: the {where} names no images: point it at your unlabeled images")
    return files


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"data.unlabeled {path} is not a text file: pass a folder of images or a UTF-8 list of "
                        f"image paths, one per line") from None
    entries = [line.split("#", 1)[0].strip() for line in lines]
    return [(path.parent / e) if not Path(e).is_absolute() else Path(e) for e in entries if e]


def file_hash(source: ImageSource, index: int) -> str:
    """sha256 of the image's file bytes ("" where it is not a file or cannot be read)."""
    path = source.path(index)
    if path is None:
        return ""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""  # the image check lists it; here it only matches nothing


def pixel_hash(source: ImageSource, index: int) -> str:
    """sha256 of the decoded RGB pixels and size: how images of sets without files (torchvision's) compare."""
    try:
        img = source.load(index)
    except Exception:  # noqa: BLE001 - an unreadable image matches nothing; the image check names it
        return ""
    return hashlib.sha256(f"{img.size}".encode() + img.tobytes()).hexdigest()


def _hashes(source: ImageSource, fn: Callable[[ImageSource, int], str]) -> list[str]:
    with ThreadPoolExecutor(max_workers=8) as ex:  # reading files: threads overlap the I/O
        return list(ex.map(lambda i: fn(source, i), range(len(source))))


def held_out_copies(pool: FileSource, pool_files: list[str], splits: DatasetSplits) -> set[int]:
    """Indices of pool images equal to a validation or test image: same file bytes, or, for held-out
    images that are not files, the same decoded pixels."""
    files, pixels = set(), set()
    for source in (splits.val, splits.test):
        for i, h in enumerate(_hashes(source, file_hash)):
            if h:
                files.add(h)
            else:
                pixels.add(pixel_hash(source, i))
    pixels.discard("")
    pool_pixels = _hashes(pool, pixel_hash) if pixels else [""] * len(pool)
    return {i for i, (f, p) in enumerate(zip(pool_files, pool_pixels)) if (f and f in files) or (p and p in pixels)}


def load_pool(cfg: DataConfig, splits: DatasetSplits, verbose: bool = True) -> Pool | None:
    """The pool of ``cfg.unlabeled`` minus copies of validation and test images; None without a pool."""
    if not cfg.unlabeled:
        return None
    files = list_pool(cfg.unlabeled)
    listed = FileSource(files, [NO_LABEL] * len(files))
    hashes = _hashes(listed, file_hash)
    copies = held_out_copies(listed, hashes, splits)
    keep = [i for i in range(len(files)) if i not in copies]
    dropped = len(files) - len(keep)
    if not keep:
        raise UserError(f"data.unlabeled {cfg.unlabeled}: all {len(files)} images are copies of validation or test "
                        f"images and were dropped: give unlabeled images the evaluation does not use")
    if verbose:
        note = (f", dropped {dropped} that are copies of validation or test images (never trained on)"
                if dropped else ", none of them a copy of a validation or test image")
        print(f"unlabeled pool: {len(keep)} images from {cfg.unlabeled}{note}", file=sys.stderr, flush=True)
    return Pool(listed.subset(keep), len(files), dropped, [hashes[i] for i in keep])


def pool_batch_size(cfg: DataConfig) -> int:
    """Unlabeled images per step: ``data.unlabeled_ratio`` × the labeled batch (at least 1)."""
    return max(1, round(cfg.unlabeled_ratio * cfg.batch_size))


def split_sources(splits: DatasetSplits, pool: Pool | None) -> dict[str, ImageSource]:
    """``name -> source`` of every image a run reads, for the image check."""
    out: dict[str, ImageSource] = {"train": splits.train, "val": splits.val, "test": splits.test}
    if pool is not None:
        out["unlabeled"] = pool.source
    return out
