"""What a student family declares, and the registry of families by prefix.

An architecture name belongs to the family its prefix names: ``timm:convnext_atto`` to the family
registered under ``"timm:"``; a bare name (no ``:``) to the family registered under ``""`` (the
torchvision names). A family module calls ``register_family`` once, at import; the modules of
``students/families/`` are imported by the package, a module elsewhere (a test, a plug-in) by
whoever imports it before building a student.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from formats.errors import UserError


def _unchanged(model: nn.Module, input_size: tuple[int, int]) -> nn.Module:
    return model


def _no_normalization(arch: str) -> None:
    return None


def weights_file_problem(arch: str, weights: str) -> str | None:
    """A local ``student.weights`` file that is not there; ``imagenet`` and ``none`` are the family's business."""
    if weights in ("imagenet", "none") or Path(weights).is_file():
        return None
    return f"student.weights file {weights} not found: pass an existing weights file for {arch}, or none"


@dataclass(frozen=True)
class StudentFamily:
    """One family of students: how its names are checked and built, and its inference form.

    ``build(arch, weights)`` returns ``(backbone, d)``: a module mapping (B, 3, H, W) images to (B, d)
    features, and d; ``weights`` is ``imagenet`` (the family's own pretrained weights, failing at once
    offline), ``none`` (random init) or a local weights file. ``missing_weights(arch, weights)`` says,
    before any work, what ``build`` would need from the network and cannot get.
    """

    prefix: str  # "name:" (or "" for bare names); the architecture is "<prefix><model name>"
    build: Callable[[str, str], tuple[nn.Module, int]]  # (arch, weights) -> (backbone, d)
    problem: Callable[[str], str | None]  # why ``arch`` is no student of this family (a full sentence), None if it is
    names: Callable[[], tuple[str, ...]]  # the students it lists (the tested ones) for list_students()
    hint: str  # how its names are written, for errors: e.g. "any timm model as timm:<name>"
    # the inference form of a trained student (eval mode) for (H, W) inputs: the same function, fewer operations
    deploy: Callable[[nn.Module, tuple[int, int]], nn.Module] = _unchanged
    # the (mean, std) the family's ImageNet weights were trained with, if it knows them
    pretrained_normalization: Callable[[str], tuple[tuple[float, ...], tuple[float, ...]] | None] = _no_normalization
    # (arch, weights) -> what ``build`` would have to download and cannot (a sentence: the file to fetch, where to
    # put it, the offline alternative), None when nothing is missing; never downloads (the run's preflight asks)
    missing_weights: Callable[[str, str], str | None] = weights_file_problem

    def __post_init__(self) -> None:
        if self.prefix and (not self.prefix.endswith(":") or self.prefix.count(":") != 1):
            raise ValueError(f"student family prefix {self.prefix!r} must be empty or end in one ':' (e.g. 'timm:')")


_FAMILIES: dict[str, StudentFamily] = {}


def register_family(family: StudentFamily) -> StudentFamily:
    """Add ``family`` under its prefix; a prefix registered twice is an error."""
    if family.prefix in _FAMILIES:
        raise ValueError(f"student family prefix {family.prefix!r} is already registered")
    _FAMILIES[family.prefix] = family
    return family


def families() -> list[StudentFamily]:
    """The registered families, bare names first, then by prefix."""
    return [_FAMILIES[p] for p in sorted(_FAMILIES)]


def prefix_of(arch: str) -> str:
    """``"timm:"`` for ``timm:convnext_atto``, ``""`` for ``resnet18``."""
    return arch[:arch.index(":") + 1] if ":" in arch else ""


def family_of(arch: str) -> StudentFamily:
    """The family ``arch`` belongs to; an unregistered prefix is one error listing the registered ones."""
    prefix = prefix_of(arch)
    if prefix not in _FAMILIES:
        known = "; ".join(f"{f.prefix!r}: {f.hint}" if f.prefix else f"no prefix: {f.hint}" for f in families())
        raise UserError(f"unknown student {arch!r}: no student family has the prefix {prefix!r}; registered: {known}")
    return _FAMILIES[prefix]
