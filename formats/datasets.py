"""Dataset label readers every stage shares: CUB-200-2011, class folders, label-name files, splits.

Labels come from the dataset's own annotation files or from sorted folder names, never from
directory listing order. The validation split is carved from the training split, stratified per
class, with a fixed seed, so export finds exactly the images the student was trained and selected
on. ``DatasetSpec`` is what a checkpoint records about its dataset (the ``data`` section of the run
config): enough to read the same splits again without the training code.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from formats.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
CUB_FILES = ("images.txt", "train_test_split.txt", "image_class_labels.txt", "classes.txt")


def clean_class_name(raw: str) -> str:
    """``001.Black_footed_Albatross`` -> ``Black footed Albatross``."""
    return re.sub(r"^\d+\.", "", raw).replace("_", " ").strip()


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


class ImageSource(Protocol):
    """Labelled images by index: what training, calibration and evaluation read."""

    labels: list[int]

    def __len__(self) -> int: ...
    def load(self, index: int) -> Image.Image: ...


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

    def subset(self, indices: Sequence[int]) -> "FileSource":
        return FileSource([self.paths[i] for i in indices], [self.labels[i] for i in indices])


@dataclass
class TorchvisionSource:
    """A torchvision dataset (returns PIL image, label) with its labels read once."""

    dataset: Any
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        img, _ = self.dataset[index]
        return img.convert("RGB")


@dataclass
class SubsetSource:
    source: Any
    indices: list[int]

    def __post_init__(self) -> None:
        self.labels = [self.source.labels[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> Image.Image:
        return self.source.load(self.indices[index])


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives and how it is split: the ``data`` section a checkpoint records."""

    name: str  # "cub", "imagefolder", or one of torchvision's sets (TORCHVISION_DATASETS)
    root: str
    split_seed: int
    val_fraction: float
    label_names: str  # "folder<TAB>name" file for image folders; "" for cleaned folder names

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> "DatasetSpec":
        missing = [k for k in ("name", "root", "split_seed", "val_fraction", "label_names") if k not in d]
        if missing:
            raise UserError(f"{where} lacks data.{missing[0]}: it was not written by this toolkit's distill; "
                            f"re-run training to get a complete checkpoint")
        return cls(name=str(d["name"]), root=str(d["root"]), split_seed=int(d["split_seed"]),
                   val_fraction=float(d["val_fraction"]), label_names=str(d["label_names"] or ""))


@dataclass
class DatasetSplits:
    class_names: list[str]
    train: ImageSource
    val: ImageSource
    test: ImageSource


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
    return [clean_class_name(classes[c]) for c in sorted(classes)], train, test


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
    return [mapping[f] for f in folders]


def read_imagefolder(root: Path, split_seed: int, label_names: str = "") -> tuple[list[str], FileSource, FileSource]:
    """``root/<class>/*.jpg`` (20% of every class held out as test, seeded) or ``root/{train,test}/<class>/``."""
    root = Path(root)
    need_dir(root, "image")
    if (root / "train").is_dir() and (root / "test").is_dir():
        folders, train = scan_class_folders(root / "train")
        test_folders, test = scan_class_folders(root / "test")
        if test_folders != folders:
            raise UserError(f"{root}/train and {root}/test must have the same class folders")
    else:
        folders, everything = scan_class_folders(root)
        keep, held = stratified_split(everything.labels, 0.2, split_seed)
        train, test = everything.subset(keep), everything.subset(held)
    if not folders:
        raise UserError(f"no class folders in {root}: expected one sub-folder of images per class")
    names = read_label_names(label_names, folders) if label_names else [clean_class_name(f) for f in folders]
    return names, train, test


# --------------------------------------------------------------------------- torchvision's sets

@dataclass(frozen=True)
class TorchvisionSet:
    """How to open one of torchvision's datasets: its class, the split arguments, the class names."""

    cls: str
    train: dict[str, str]
    test: dict[str, str]
    names: Callable[[Any], list[str]]


def _flowers_names(ds: Any) -> list[str]:
    # torchvision ships no Flowers-102 names; class indices stand in until a label_names file is given.
    return [f"flower {i + 1}" for i in range(len(set(ds._labels)))]


TORCHVISION_DATASETS: dict[str, TorchvisionSet] = {
    "aircraft": TorchvisionSet("FGVCAircraft", {"split": "trainval"}, {"split": "test"}, lambda d: list(d.classes)),
    "flowers102": TorchvisionSet("Flowers102", {"split": "train"}, {"split": "test"}, _flowers_names),
    "pets": TorchvisionSet("OxfordIIITPet", {"split": "trainval"}, {"split": "test"}, lambda d: list(d.classes)),
    "dtd": TorchvisionSet("DTD", {"split": "train"}, {"split": "test"}, lambda d: list(d.classes)),
    "food101": TorchvisionSet("Food101", {"split": "train"}, {"split": "test"},
                              lambda d: [c.replace("_", " ") for c in d.classes]),
}


def _torchvision_source(ds: Any) -> TorchvisionSource:
    labels = getattr(ds, "_labels", None) or getattr(ds, "targets", None)
    if labels is None:  # fall back to reading every label once
        labels = [ds[i][1] for i in range(len(ds))]
    return TorchvisionSource(ds, [int(y) for y in labels])


def read_torchvision(spec: DatasetSpec, datasets: Any, download: bool = False) -> tuple[list[str], Any, Any]:
    """(class names, train, test) of one of ``TORCHVISION_DATASETS``.

    ``datasets`` is the caller's ``torchvision.datasets`` module: this package never imports torch.
    """
    entry = TORCHVISION_DATASETS[spec.name]
    cls = getattr(datasets, entry.cls)
    try:
        train = cls(spec.root, download=download, **entry.train)
        test = cls(spec.root, download=download, **entry.test)
    except RuntimeError as exc:
        raise UserError(f"{entry.cls} not found under {spec.root} ({str(exc).splitlines()[0]}): "
                        f"set data.root to its folder, or data.download=true on a machine with internet") from None
    return entry.names(train), _torchvision_source(train), _torchvision_source(test)


# --------------------------------------------------------------------------- splits

FILE_DATASETS: dict[str, Callable[[DatasetSpec], tuple[list[str], FileSource, FileSource]]] = {
    "cub": lambda spec: read_cub(Path(spec.root)),
    "imagefolder": lambda spec: read_imagefolder(Path(spec.root), spec.split_seed, spec.label_names),
}
DATASETS = (*FILE_DATASETS, *TORCHVISION_DATASETS)


def load_splits(spec: DatasetSpec, torchvision_datasets: Any = None, download: bool = False) -> DatasetSplits:
    """Train / val / test of ``spec``; the validation split is carved from train, stratified and seeded.

    torchvision's sets need the caller's ``torchvision.datasets`` module (``torchvision_datasets``).
    """
    if spec.name in FILE_DATASETS:
        names, train, test = FILE_DATASETS[spec.name](spec)
    elif spec.name in TORCHVISION_DATASETS:
        if torchvision_datasets is None:
            raise UserError(f"dataset {spec.name!r} is read through torchvision: install torchvision")
        names, train, test = read_torchvision(spec, torchvision_datasets, download)
    else:
        raise UserError(f"unknown dataset {spec.name!r}; choose one of: {', '.join(DATASETS)}")
    if len(train) == 0 or len(test) == 0:
        raise UserError(f"dataset {spec.name} at {spec.root} has an empty train or test split: check data.root")
    keep, held = stratified_split(train.labels, spec.val_fraction, spec.split_seed)
    return DatasetSplits(names, SubsetSource(train, keep), SubsetSource(train, held), test)
