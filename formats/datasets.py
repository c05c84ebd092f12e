"""Datasets as the stages share them: the spec a checkpoint records, image sources, the splits.

``DatasetSpec`` is what a checkpoint records about its dataset (the ``data`` section of the run
config): enough to read the same splits again without the training code. File-based sets are
read by ``formats.labels``; torchvision's sets through the caller's ``torchvision.datasets``
module (this package never imports torch). The validation split is carved from the training
split, stratified per class, with a fixed seed, so export finds exactly the images the student
was trained and selected on.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from PIL import Image

from formats.errors import UserError
from formats.labels import FileSource, read_cub, read_imagefolder, stratified_split


class ImageSource(Protocol):
    """Labelled images by index: what training, calibration and evaluation read."""

    labels: list[int]

    def __len__(self) -> int: ...
    def load(self, index: int) -> Image.Image: ...
    def path(self, index: int) -> Path | None: ...  # the file, where the images are files


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

    def path(self, index: int) -> Path | None:
        return None  # torchvision's sets keep their files private


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

    def path(self, index: int) -> Path | None:
        return self.source.path(self.indices[index])


@dataclass
class ConcatSource:
    """Several image sources one after another (indices of the first, then of the second, ...)."""

    parts: list[Any]

    def __post_init__(self) -> None:
        self.labels = [label for part in self.parts for label in part.labels]
        self._where = [(k, i) for k, part in enumerate(self.parts) for i in range(len(part))]

    def __len__(self) -> int:
        return len(self._where)

    def load(self, index: int) -> Image.Image:
        k, i = self._where[index]
        return self.parts[k].load(i)

    def path(self, index: int) -> Path | None:
        k, i = self._where[index]
        return self.parts[k].path(i)


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
