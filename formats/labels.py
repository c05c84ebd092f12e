"""Readers of file-based datasets every stage shares: CUB-200-2011, class folders, label-name files.

Labels come from the dataset's own annotation files or from sorted folder names, never from
directory listing order. distill trains on them, export calibrates and evaluates on them, and
``runtime.bench --data`` scores on them: one reader, so the three agree on every label.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from formats.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
CUB_FILES = ("images.txt", "train_test_split.txt", "image_class_labels.txt", "classes.txt")


def clean_class_name(raw: str) -> str:
    """``001.Black_footed_Albatross`` -> ``Black footed Albatross``."""
    return re.sub(r"^\d+\.", "", raw).replace("_", " ").strip()


def label_problem(name: str) -> str | None:
    """Why ``name`` cannot be one line of a bundle's labels.txt and read back as itself, or None.

    labels.txt is UTF-8 with one name per line, blank lines skipped: an empty name (a folder
    ``_`` or ``001.`` cleans to one) would shift every later class, a line break would split it.
    """
    if not name.strip():
        return "is empty"
    if name.splitlines() != [name]:  # \n, \r and the other characters that end a line
        return "holds a line break"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a folder name whose bytes are not UTF-8 (Python keeps them as surrogates)
        return "is not valid UTF-8 text"
    return None


def check_class_names(names: Sequence[str], sources: Sequence[str], fix: str) -> None:
    """A UserError for the first name ``label_problem`` refuses, naming where it came from and ``fix``."""
    for name, source in zip(names, sources):
        problem = label_problem(name)
        if problem is not None:
            raise UserError(f"class {source} gives the class name {name!r}, which {problem}: a bundle lists one "
                            f"class name per line of labels.txt, so it could not be exported; {fix}")


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices into (keep, held_out), taking ``fraction`` of every class, seeded."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    keep, held = [], []
    for y in sorted(by_class):
        idx = np.array(by_class[y])
        rng.shuffle(idx)
        n_held = min(len(idx) - 1, max(1, math.ceil(fraction * len(idx)))) if len(idx) > 1 else 0
        held += idx[:n_held].tolist()
        keep += idx[n_held:].tolist()
    return sorted(keep), sorted(held)


def load_image(path: Path) -> Image.Image:
    """Decode an image fully (so truncation is caught here) as RGB, or raise a UserError."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"image {path} is missing: restore it or remove it from the dataset lists") from None
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as exc:
        raise UserError(f"image {path} is corrupt or unreadable ({exc}): replace or delete it") from None


@dataclass
class FileSource:
    """Image files and their labels, in a fixed order."""

    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        return load_image(self.paths[index])

    def path(self, index: int) -> Path | None:
        return self.paths[index]

    def subset(self, indices: Sequence[int]) -> "FileSource":
        return FileSource([self.paths[i] for i in indices], [self.labels[i] for i in indices])


# --------------------------------------------------------------------------- CUB-200-2011

def _is_id(text: str) -> bool:
    return text.isascii() and text.isdecimal()  # "12", not "-1", "1.5" or "²"


def _table(path: Path) -> dict[int, str]:
    """``<id> <value>`` lines of a CUB annotation file."""
    if not path.is_file():
        raise UserError(f"{path} is missing: a CUB-200-2011 folder needs {', '.join(CUB_FILES)} and images/")
    table: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        parts = line.split(maxsplit=1)
        if not parts:
            continue
        if len(parts) != 2 or not _is_id(parts[0]):
            raise UserError(f"{path} line {n} is {line[:80]!r}: each line must be '<id> <value>' as in "
                            f"CUB-200-2011; restore the file from the dataset archive")
        table[int(parts[0])] = parts[1].strip()
    return table


def read_cub(root: Path) -> tuple[list[str], FileSource, FileSource]:
    """(class names in label order, train files, test files) from CUB's own annotation files.

    The label of a class is the rank of its class id, independent of any listing order.
    """
    root = Path(root)
    need_dir(root, "CUB-200-2011")
    classes, images = _table(root / "classes.txt"), _table(root / "images.txt")
    class_of, split = _table(root / "image_class_labels.txt"), _table(root / "train_test_split.txt")
    if set(images) != set(class_of) or set(images) != set(split):
        raise UserError(f"CUB files in {root} disagree on image ids: images.txt, image_class_labels.txt "
                        f"and train_test_split.txt must list the same ids")
    rank = {cid: r for r, cid in enumerate(sorted(classes))}
    unknown = [i for i in sorted(images) if not _is_id(class_of[i]) or int(class_of[i]) not in rank]
    if unknown:
        raise UserError(f"{len(unknown)} images of {root} (first: id {unknown[0]}) have no class in "
                        f"image_class_labels.txt that classes.txt lists: restore both files")
    missing = [images[i] for i in sorted(images) if not (root / "images" / images[i]).is_file()]
    if missing:
        raise UserError(f"{len(missing)} images listed in {root / 'images.txt'} are missing "
                        f"(first: images/{missing[0]}): restore the images/ folder")
    train, test = FileSource(), FileSource()
    for i in sorted(images):
        dst = train if split[i] == "1" else test  # 1 = training image in CUB's split file
        dst.paths.append(root / "images" / images[i])
        dst.labels.append(rank[int(class_of[i])])
    names = [clean_class_name(classes[c]) for c in sorted(classes)]
    check_class_names(names, [f"{c} of {root / 'classes.txt'}" for c in sorted(classes)],
                      "correct its line in classes.txt")
    return names, train, test


# --------------------------------------------------------------------------- class folders

def need_dir(root: Path, what: str) -> None:
    if not root.is_dir():
        raise UserError(f"{what} folder {root} not found: set data.root to where the dataset lives")


def scan_class_folders(root: Path) -> tuple[list[str], FileSource]:
    """Sorted class folder names and their images (searched recursively), labelled by folder rank."""
    folders = sorted(d.name for d in Path(root).iterdir() if d.is_dir())
    files = FileSource()
    for label, name in enumerate(folders):
        for f in sorted((Path(root) / name).rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                files.paths.append(f)
                files.labels.append(label)
    return folders, files


def read_label_names(path: str | Path, folders: list[str]) -> list[str]:
    """Class names from a ``folder<TAB>name`` file, one per folder, in folder order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data.label_names file {path} not found: pass an existing file or leave it empty")
    mapping = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if "\t" in line:
            folder, name = line.split("\t", 1)
            mapping[folder.strip()] = name.strip()
    missing = [f for f in folders if f not in mapping]
    if missing:
        raise UserError(f"data.label_names {path} has no 'folder<TAB>name' line for {missing[0]!r}")
    names = [mapping[f] for f in folders]
    check_class_names(names, [f"folder {f!r} (in data.label_names {path})" for f in folders],
                      f"correct its line in {path}")
    return names


def read_imagefolder(root: Path, split_seed: int, label_names: str = "") -> tuple[list[str], FileSource, FileSource]:
    """``root/<class>/*.jpg`` (20% of every class held out as test, seeded) or ``root/{train,test}/<class>/``."""
    root = Path(root)
    need_dir(root, "image")
    split = (root / "train").is_dir() and (root / "test").is_dir()
    classes = root / "train" if split else root
    folders, train = scan_class_folders(classes)
    if split:
        test_folders, test = scan_class_folders(root / "test")
        if test_folders != folders:
            raise UserError(f"{root}/train and {root}/test must have the same class folders")
    else:
        keep, held = stratified_split(train.labels, 0.2, split_seed)
        train, test = train.subset(keep), train.subset(held)
    if not folders:
        raise UserError(f"no class folders in {root}: expected one sub-folder of images per class")
    if label_names:
        return read_label_names(label_names, folders), train, test
    names = [clean_class_name(f) for f in folders]
    check_class_names(names, [f"folder {str(classes / f)!r}" for f in folders],
                      "rename the folder, or give data.label_names (a file of 'folder<TAB>name' lines)")
    return names, train, test
