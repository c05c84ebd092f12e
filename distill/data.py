"""Datasets: CUB-200-2011, a generic image folder, and torchvision's fine-grained sets.

Every loader returns ``DatasetSplits``: class names in label order and three image sources
(train, val, test). Labels come from the dataset's own annotation files or from sorted folder
names, never from directory listing order. The validation split is carved from the training
split, stratified per class, with a fixed seed; model selection only ever looks at it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from distill.config import DataConfig
from distill.errors import UserError
from distill.transforms import TargetSpec, ViewSampler, eval_transform

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}

# Prompt templates per dataset (DESIGN.md section 3), a few per set for the ensemble.
PROMPTS: dict[str, tuple[str, ...]] = {
    "cub": ("a photo of {}, a type of bird.", "a close-up photo of a {}, a type of bird.",
            "a photo of the {}, a small bird."),
    "aircraft": ("a photo of {}, one of the airplane models.", "a photo of a {}, a type of aircraft."),
    "flowers102": ("a photo of {}, a type of flower.",),
    "pets": ("a photo of {}, a type of pet.",),
    "dtd": ("a photo of {} pattern.", "a photo of a {} texture."),
    "food101": ("a photo of {}, a type of food.",),
    "imagefolder": ("a photo of {}.", "a photo of a {}."),
}


class ImageSource(Protocol):
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
    paths: list[Path]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        return load_image(self.paths[index])


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


@dataclass
class DatasetSplits:
    class_names: list[str]
    train: ImageSource
    val: ImageSource
    test: ImageSource


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


def clean_class_name(raw: str) -> str:
    """``001.Black_footed_Albatross`` -> ``Black footed Albatross``."""
    return re.sub(r"^\d+\.", "", raw).replace("_", " ").strip()


# --------------------------------------------------------------------------- loaders

def load_dataset(cfg: DataConfig) -> DatasetSplits:
    """Build the train/val/test sources for ``cfg.name``."""
    if cfg.name not in LOADERS:
        raise UserError(f"unknown dataset {cfg.name!r}; choose one of: {', '.join(LOADERS)}")
    class_names, train, test = LOADERS[cfg.name](cfg)
    if len(train) == 0 or len(test) == 0:
        raise UserError(f"dataset {cfg.name} at {cfg.root} has an empty train or test split: check data.root")
    keep, held = stratified_split(train.labels, cfg.val_fraction, cfg.split_seed)
    return DatasetSplits(class_names, SubsetSource(train, keep), SubsetSource(train, held), test)


def _need_dir(root: Path, what: str) -> None:
    if not root.is_dir():
        raise UserError(f"{what} folder {root} not found: set data.root to where the dataset lives")


def _read_table(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise UserError(f"{path} is missing: this is not a CUB-200-2011 folder (expected images.txt, "
                        f"train_test_split.txt, image_class_labels.txt, classes.txt, images/)")
    rows = [line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip()]
    if any(len(r) != 2 for r in rows):
        raise UserError(f"{path} is malformed: every line must be '<id> <value>'")
    return rows


def _load_cub(cfg: DataConfig) -> tuple[list[str], FileSource, FileSource]:
    root = Path(cfg.root)
    _need_dir(root, "CUB-200-2011")
    classes = {int(i): name for i, name in _read_table(root / "classes.txt")}
    images = {int(i): p for i, p in _read_table(root / "images.txt")}
    labels = {int(i): int(c) for i, c in _read_table(root / "image_class_labels.txt")}
    is_train = {int(i): s.strip() == "1" for i, s in _read_table(root / "train_test_split.txt")}
    class_ids = sorted(classes)  # label = rank of the class id, independent of any listing
    rank = {cid: r for r, cid in enumerate(class_ids)}
    if set(images) != set(labels) or set(images) != set(is_train):
        raise UserError(f"CUB files in {root} disagree on image ids: images.txt, image_class_labels.txt "
                        f"and train_test_split.txt must list the same ids")
    missing = [images[i] for i in sorted(images) if not (root / "images" / images[i]).is_file()]
    if missing:
        raise UserError(f"{len(missing)} images listed in {root / 'images.txt'} are missing "
                        f"(first: images/{missing[0]}): restore the images/ folder")
    train, test = FileSource([], []), FileSource([], [])
    for i in sorted(images):
        dst = train if is_train[i] else test
        dst.paths.append(root / "images" / images[i])
        dst.labels.append(rank[labels[i]])
    return [clean_class_name(classes[c]) for c in class_ids], train, test


def _scan_folders(root: Path) -> tuple[list[str], FileSource]:
    folders = sorted(d.name for d in root.iterdir() if d.is_dir())
    src = FileSource([], [])
    for label, name in enumerate(folders):
        for f in sorted((root / name).rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                src.paths.append(f)
                src.labels.append(label)
    return folders, src


def _load_imagefolder(cfg: DataConfig) -> tuple[list[str], FileSource, Any]:
    """``root/<class>/*.jpg`` or ``root/train/<class>/..`` + ``root/test/<class>/..``."""
    root = Path(cfg.root)
    _need_dir(root, "image")
    if (root / "train").is_dir() and (root / "test").is_dir():
        folders, train = _scan_folders(root / "train")
        test_folders, test = _scan_folders(root / "test")
        if test_folders != folders:
            raise UserError(f"{root}/train and {root}/test must have the same class folders")
    else:
        folders, everything = _scan_folders(root)
        keep, held = stratified_split(everything.labels, 0.2, cfg.split_seed)
        train, test = SubsetSource(everything, keep), SubsetSource(everything, held)
    if not folders:
        raise UserError(f"no class folders in {root}: expected one sub-folder of images per class")
    return _label_names(cfg, folders), train, test


def _label_names(cfg: DataConfig, folders: list[str]) -> list[str]:
    if not cfg.label_names:
        return [clean_class_name(f) for f in folders]
    path = Path(cfg.label_names)
    if not path.is_file():
        raise UserError(f"data.label_names file {path} not found: pass an existing file or leave it empty")
    mapping = {}
    for line in path.read_text().splitlines():
        if "\t" in line:
            folder, name = line.split("\t", 1)
            mapping[folder.strip()] = name.strip()
    missing = [f for f in folders if f not in mapping]
    if missing:
        raise UserError(f"data.label_names {path} has no 'folder<TAB>name' line for {missing[0]!r}")
    return [mapping[f] for f in folders]


def _torchvision_loader(cls_name: str, train_kw: dict, test_kw: dict,
                        names: Callable[[Any], list[str]]) -> Callable:
    def load(cfg: DataConfig) -> tuple[list[str], TorchvisionSource, TorchvisionSource]:
        import torchvision.datasets as D
        cls = getattr(D, cls_name)
        try:
            train = cls(cfg.root, download=cfg.download, **train_kw)
            test = cls(cfg.root, download=cfg.download, **test_kw)
        except RuntimeError as exc:
            raise UserError(f"{cls_name} not found under {cfg.root} ({str(exc).splitlines()[0]}): "
                            f"set data.root to its folder, or data.download=true on a machine with internet") from None
        return names(train), _tv_source(train), _tv_source(test)
    return load


def _tv_source(ds: Any) -> TorchvisionSource:
    labels = getattr(ds, "_labels", None) or getattr(ds, "targets", None)
    if labels is None:  # fall back to reading every label once
        labels = [ds[i][1] for i in range(len(ds))]
    return TorchvisionSource(ds, [int(y) for y in labels])


LOADERS: dict[str, Callable[[DataConfig], tuple[list[str], Any, Any]]] = {
    "cub": _load_cub,
    "imagefolder": _load_imagefolder,
    "aircraft": _torchvision_loader("FGVCAircraft", {"split": "trainval"}, {"split": "test"},
                                    lambda d: list(d.classes)),
    "flowers102": _torchvision_loader("Flowers102", {"split": "train"}, {"split": "test"},
                                      lambda d: _flowers_names(len(set(d._labels)))),
    "pets": _torchvision_loader("OxfordIIITPet", {"split": "trainval"}, {"split": "test"},
                                lambda d: list(d.classes)),
    "dtd": _torchvision_loader("DTD", {"split": "train"}, {"split": "test"}, lambda d: list(d.classes)),
    "food101": _torchvision_loader("Food101", {"split": "train"}, {"split": "test"},
                                   lambda d: [c.replace("_", " ") for c in d.classes]),
}


def _flowers_names(n: int) -> list[str]:
    # torchvision ships no Flowers-102 names; class indices stand in until a label_names file is given.
    return [f"flower {i + 1}" for i in range(n)]


# --------------------------------------------------------------------------- torch datasets

@dataclass(frozen=True)
class ViewSchedule:
    """Which view of image ``index`` epoch ``epoch`` shows.

    ``num_views == 0`` (teacher online): a fresh view every epoch, ``view = epoch``.
    ``num_views == K`` (teacher cache of K views): one of the K, drawn from (seed, epoch, index).
    """

    seed: int
    epoch: int
    num_views: int = 0

    def __call__(self, index: int) -> int:
        if self.num_views == 0:
            return self.epoch
        return int(np.random.default_rng([self.seed, self.epoch, index]).integers(self.num_views))


class TrainViews(Dataset):
    """Seeded augmented views: ``(x_student, x_teacher, label, index, view)``; ``set_view`` picks the view.

    ``x_teacher`` is an empty tensor when no teacher target is given (baseline, or cached teacher).
    """

    def __init__(self, source: ImageSource, sampler: ViewSampler, student: TargetSpec,
                 teacher: TargetSpec | None = None) -> None:
        self.source, self.sampler, self.student, self.teacher = source, sampler, student, teacher
        self.view_of: Callable[[int], int] = ViewSchedule(seed=0, epoch=0)

    def set_view(self, view_of: Callable[[int], int]) -> None:
        """``view_of(index) -> view number`` for the coming epoch (picklable for workers)."""
        self.view_of = view_of

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, int, int]:
        img = self.source.load(index)
        view = self.view_of(index)
        params = self.sampler.params(index, view, *img.size)
        x_s = self.sampler.render(img, params, self.student)
        x_t = self.sampler.render(img, params, self.teacher) if self.teacher else torch.empty(0)
        return x_s, x_t, self.source.labels[index], index, view


class EvalImages(Dataset):
    """``(x, label)`` through the evaluation transform of a preprocessing spec."""

    def __init__(self, source: ImageSource, preprocessing: dict) -> None:
        self.source, self.transform = source, eval_transform(preprocessing)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.source.load(index)), self.source.labels[index]
