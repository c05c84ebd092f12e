"""Datasets: CUB-200-2011, a generic image folder, and torchvision's fine-grained sets.

Every loader returns ``DatasetSplits``: class names in label order and three image sources
(train, val, test). The file-based sets (CUB, image folders) and the split rule are read by
``formats.datasets``, the same readers export and the runtime use; torchvision's sets through
torchvision. The validation split is carved from the training split, stratified per class, with
a fixed seed; model selection only ever looks at it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from distill.config import DataConfig
from distill.transforms import TargetSpec, ViewSampler, eval_transform
from formats.datasets import DatasetSpec, DatasetSplits, ImageSource, load_splits

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


def dataset_spec(cfg: DataConfig) -> DatasetSpec:
    """What a checkpoint records about the dataset (``formats.datasets``)."""
    return DatasetSpec(name=cfg.name, root=cfg.root, split_seed=cfg.split_seed, val_fraction=cfg.val_fraction,
                       label_names=cfg.label_names)


# --------------------------------------------------------------------------- loaders

def load_dataset(cfg: DataConfig) -> DatasetSplits:
    """Build the train/val/test sources for ``cfg.name`` (``formats.datasets``, the readers export uses)."""
    import torchvision.datasets

    return load_splits(dataset_spec(cfg), torchvision.datasets, cfg.download)


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
    """Seeded augmented views: ``(x_student, x_teacher, label, partner label, lam, index, view)``.

    ``set_view`` picks the view of each image. ``x_teacher`` is an empty tensor when no teacher target
    is given (baseline, or cached teacher). A blended view (``data.mix``) carries its partner's label
    and its own share ``lam``; any other view its own label twice and lam 1.

    With ``student_sampler`` (the pool's ``data.unlabeled_student_view=fresh``) the student's view is its own:
    view ``epoch`` of that sampler, a fresh crop and flip every epoch, while ``view`` (the teacher's, whose
    cached embedding is the target) stays the scheduled one: the student is noised, the teacher is not.
    """

    def __init__(self, source: ImageSource, sampler: ViewSampler, student: TargetSpec,
                 teacher: TargetSpec | None = None, student_sampler: ViewSampler | None = None) -> None:
        self.source, self.sampler, self.student, self.teacher = source, sampler, student, teacher
        self.student_sampler = student_sampler
        self.view_of: ViewSchedule = ViewSchedule(seed=0, epoch=0)

    def set_view(self, view_of: ViewSchedule) -> None:
        """The view of each image for the coming epoch (picklable for workers)."""
        self.view_of = view_of

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, int, float, int, int]:
        view = self.view_of(index)
        if self.student_sampler is not None:
            return self._noised(index, view)
        targets = [self.student, self.teacher] if self.teacher else [self.student]
        xs, partner_label, lam = self.sampler.sample(self.source, index, view, targets)
        x_t = xs[1] if self.teacher else torch.empty(0)
        return xs[0], x_t, self.source.labels[index], partner_label, lam, index, view

    def _noised(self, index: int, view: int) -> tuple[torch.Tensor, torch.Tensor, int, int, float, int, int]:
        """The student's own fresh view, the teacher's scheduled one (the pool's views are never blended)."""
        img, own, label = self.source.load(index), self.student_sampler, self.source.labels[index]
        x_s = own.render(img, own.params(index, self.view_of.epoch, *img.size), self.student)
        x_t = (self.sampler.render(img, self.sampler.params(index, view, *img.size), self.teacher) if self.teacher
               else torch.empty(0))
        return x_s, x_t, label, label, 1.0, index, view


class EvalImages(Dataset):
    """``(x, label)`` through the evaluation transform of a preprocessing spec."""

    def __init__(self, source: ImageSource, preprocessing: dict) -> None:
        self.source, self.transform = source, eval_transform(preprocessing)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.source.load(index)), self.source.labels[index]


class CacheViews(Dataset):
    """Teacher views ``(x_t, index, view)`` for items ``(i, v)``: the same crops training replays."""

    def __init__(self, source: ImageSource, sampler: ViewSampler, target: TargetSpec,
                 items: list[tuple[int, int]]) -> None:
        self.source, self.sampler, self.target, self.items = source, sampler, target, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int, int]:
        i, v = self.items[k]
        (x,), _, _ = self.sampler.sample(self.source, i, v, [self.target])
        return x, i, v
