"""Labelled evaluation images for ``bench --data``: a CUB-layout root (test split) or class folders.

Labels are matched to the bundle's ``labels.txt`` by name, exactly or after the same cleaning that
training applies (``001.Black_footed_Albatross`` -> ``Black footed Albatross``), so a folder whose
classes are in another order or a different subset still scores correctly; a name that matches
no label is an error, never a guess.
"""
from __future__ import annotations

import re
from pathlib import Path

from runtime.errors import RuntimeUserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
CUB_FILES = ("images.txt", "train_test_split.txt", "image_class_labels.txt", "classes.txt")


def clean_class_name(raw: str) -> str:
    """The training side's cleaning: drop a leading ``NNN.`` prefix, underscores become spaces."""
    return re.sub(r"^\d+\.", "", raw).replace("_", " ").strip()


def label_index(labels: tuple[str, ...]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, name in enumerate(labels):
        index.setdefault(name, i)
        index.setdefault(clean_class_name(name), i)
    return index


def _lookup(name: str, index: dict[str, int], where: Path) -> int:
    for key in (name, clean_class_name(name)):
        if key in index:
            return index[key]
    raise RuntimeUserError(f"class {name!r} in {where} matches no label of the bundle: pass data labelled "
                           f"with the classes the model was trained on")


def load_labelled_images(root: str | Path, labels: tuple[str, ...], limit: int | None = None) -> list[tuple[Path, int]]:
    """(image path, label index) pairs, sorted for reproducibility, at most ``limit`` of them."""
    root = Path(root)
    if not root.is_dir():
        raise RuntimeUserError(f"--data folder {root} not found: pass a CUB-layout root or a folder of class folders")
    items = _cub_test_split(root, labels) if (root / "images.txt").is_file() else _class_folders(root, labels)
    if not items:
        raise RuntimeUserError(f"--data {root} holds no images: expected {', '.join(sorted(IMAGE_SUFFIXES))} files")
    if limit is not None:
        # An even stride keeps every class represented when the list is sorted by class.
        step = max(1, len(items) // limit)
        items = items[::step][:limit]
    return items


def _is_id(text: str) -> bool:
    return text.isascii() and text.isdecimal()  # "12", not "-1", "1.5" or "²"


def _table(path: Path) -> dict[int, str]:
    if not path.is_file():
        raise RuntimeUserError(f"{path} is missing: a CUB-layout root needs {', '.join(CUB_FILES)} and images/")
    table: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        parts = line.split(maxsplit=1)
        if not parts:
            continue
        if len(parts) != 2 or not _is_id(parts[0]):
            raise RuntimeUserError(f"{path} line {n} is {line[:80]!r}: each line must be '<id> <value>' as in "
                                   f"CUB-200-2011; restore the file from the dataset archive")
        table[int(parts[0])] = parts[1].strip()
    return table


def _cub_test_split(root: Path, labels: tuple[str, ...]) -> list[tuple[Path, int]]:
    images, classes = _table(root / "images.txt"), _table(root / "classes.txt")
    class_of, split = _table(root / "image_class_labels.txt"), _table(root / "train_test_split.txt")
    index = label_index(labels)
    to_label = {cid: _lookup(name, index, root / "classes.txt") for cid, name in classes.items()}
    test_ids = [i for i in sorted(images) if split.get(i) == "0"]  # 0 = test image in CUB's split file
    unlabelled = [i for i in test_ids if not _is_id(class_of.get(i, "")) or int(class_of[i]) not in to_label]
    if unlabelled:
        raise RuntimeUserError(f"{len(unlabelled)} test images of {root} (first: id {unlabelled[0]}) have no class "
                               f"in image_class_labels.txt that classes.txt lists: restore both files")
    items = [(root / "images" / images[i], to_label[int(class_of[i])]) for i in test_ids]
    missing = [p for p, _ in items if not p.is_file()]
    if missing:
        raise RuntimeUserError(f"{len(missing)} test images listed in {root / 'images.txt'} are missing "
                               f"(first: {missing[0]}): restore the images/ folder")
    return items


def _class_folders(root: Path, labels: tuple[str, ...]) -> list[tuple[Path, int]]:
    index = label_index(labels)
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        y = _lookup(folder.name, index, root)
        items += [(p, y) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    return items
