"""Labelled evaluation images for ``bench --data``: a CUB-layout root (test split), a root with
``train/`` and ``test/`` class folders (its ``test/``, as training splits it), or class folders.

The files are read by ``formats.datasets``, the readers training uses. Labels are matched to the
bundle's ``labels.txt`` by name, exactly or after the same cleaning that
training applies (``001.Black_footed_Albatross`` -> ``Black footed Albatross``), so a folder whose
classes are in another order or a different subset still scores correctly; a name that matches
no label is an error, never a guess.
"""
from __future__ import annotations

from pathlib import Path

from formats.errors import UserError
from formats.labels import IMAGE_SUFFIXES, clean_class_name, read_cub, scan_class_folders


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
    raise UserError(f"class {name!r} in {where} matches no label of the bundle: pass data labelled "
                           f"with the classes the model was trained on")


def load_labelled_images(root: str | Path, labels: tuple[str, ...], limit: int | None = None) -> list[tuple[Path, int]]:
    """(image path, label index) pairs, sorted for reproducibility, at most ``limit`` of them."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--data folder {root} not found: pass a CUB-layout root or a folder of class folders")
    if (root / "images.txt").is_file():
        items = _cub_test_split(root, labels)
    elif (root / "test").is_dir() and (root / "train").is_dir():  # training's train/ + test/ layout: its test split
        items = _class_folders(root / "test", labels)
    else:
        items = _class_folders(root, labels)
    if not items:
        raise UserError(f"--data {root} holds no images: expected {', '.join(sorted(IMAGE_SUFFIXES))} files")
    if limit is not None:
        # An even stride keeps every class represented when the list is sorted by class.
        step = max(1, len(items) // limit)
        items = items[::step][:limit]
    return items


def _cub_test_split(root: Path, labels: tuple[str, ...]) -> list[tuple[Path, int]]:
    class_names, _, test = read_cub(root)
    index = label_index(labels)
    to_label = [_lookup(name, index, root / "classes.txt") for name in class_names]
    return [(path, to_label[y]) for path, y in zip(test.paths, test.labels)]


def _class_folders(root: Path, labels: tuple[str, ...]) -> list[tuple[Path, int]]:
    folders, files = scan_class_folders(root)
    index = label_index(labels)
    to_label = [_lookup(name, index, root) for name in folders]
    return [(path, to_label[y]) for path, y in zip(files.paths, files.labels)]
