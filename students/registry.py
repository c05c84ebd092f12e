"""Students by name, each split into a feature backbone and a linear classifier.

A name's prefix picks its family (``students.families``): ``timm:<name>`` the timm family, a bare
name the torchvision one; any other registered prefix its own. ``Student.features(x)`` gives the
unnormalised features ``h`` (B×d) that the distillation losses use; ``Student(x)`` gives
``logits = W h`` (B×C). The width ``d`` is discovered by the family from the model, never
hard-coded. ``deployable`` gives the inference form that export and the reference row use.
"""
from __future__ import annotations

import torch
from torch import nn

from formats.errors import UserError
from students.families import load_families
from students.families.base import families, family_of

load_families()


def list_students() -> list[str]:
    """Every family's listed students: the torchvision ones, then the tested timm ones (any other
    ``timm:<name>`` works too)."""
    return [name for family in families() for name in family.names()]


def check_arch(arch: str) -> None:
    """One error for an unknown student: its family's names (a bare name: and how the other families write
    theirs), or an unknown prefix with the registered ones."""
    family = family_of(arch)
    problem = family.problem(arch)
    if problem is None:
        return
    if not family.prefix:  # a bare name may have been meant for another family
        problem += "".join(f", or {f.hint}" for f in families() if f.prefix)
    raise UserError(problem)


def missing_weights(arch: str, weights: str) -> str | None:
    """What building ``arch`` with ``weights`` needs from the network and cannot get here (its family says;
    checked before any work), else None. ``arch`` must be a known student (``check_arch``)."""
    return family_of(arch).missing_weights(arch, weights)


class Student(nn.Module):
    """Backbone giving (B, d) features (a family's headless model), plus a new ``classifier`` Linear(d, C)."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, arch: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.arch = arch
        self.classifier = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)  # (B, 3, H, W) -> (B, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, C)


def create_student(arch: str, num_classes: int, weights: str = "none") -> Student:
    """Build a student; ``weights`` is ``imagenet``, ``none`` or a weights file."""
    check_arch(arch)
    backbone, feature_dim = family_of(arch).build(arch, weights)
    return Student(backbone, feature_dim, num_classes, arch)


def deployable(student: Student, input_size: tuple[int, int] | list[int]) -> Student:
    """The inference form of a trained student for (H, W) = ``input_size`` inputs (eval mode): what its
    family makes of it (timm: re-parameterisable branches fused, TF "same" padding fixed for that size);
    the same function with fewer operations. Students of other families unchanged."""
    student = student.eval()
    size = (int(input_size[0]), int(input_size[1]))
    return family_of(student.arch).deploy(student, size).eval()


def normalization_mismatch(arch: str, weights: str, mean: tuple[float, ...], std: tuple[float, ...]) -> str | None:
    """A warning when the ImageNet weights of ``arch`` were trained with another mean/std than the data
    config's (e.g. 0.5/0.5 for some timm families): fine-tuning then starts off-distribution."""
    if weights != "imagenet":
        return None
    expected = family_of(arch).pretrained_normalization(arch)
    if expected is None:
        return None
    want_mean, want_std = expected
    if all(abs(a - b) < 1e-3 for a, b in zip((*mean, *std), (*want_mean, *want_std))):
        return None
    return (f"warning: the ImageNet weights of {arch} expect mean {list(want_mean)} and std {list(want_std)}, the data "
            f"config normalises with mean {list(mean)} and std {list(std)}: pass data.mean={list(want_mean)} "
            f"data.std={list(want_std)} so fine-tuning starts from the inputs the weights know")
