"""torchvision students, under bare names (``student.arch: resnet18``).

The backbone is the torchvision model with its last ``nn.Linear`` replaced by Identity; its input
width is the feature width d. ImageNet weights come from torchvision's cache or
download.pytorch.org; offline and not cached, the error names the file to fetch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn

from formats.errors import UserError
from formats.network import reachable
from students.families.base import StudentFamily, register_family, weights_file_problem
from students.weights import read_state_dict

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_WEIGHTS: dict[str, str] = {}


def register_torchvision(name: str, builder: Callable[..., nn.Module], weights_enum: str) -> None:
    """Add a torchvision builder (``weights=`` keyword) under ``name``; duplicates are an error."""
    if name in _BUILDERS:
        raise ValueError(f"student {name!r} is already registered")
    _BUILDERS[name] = builder
    _WEIGHTS[name] = weights_enum


for _name, _enum in [
    ("resnet18", "ResNet18_Weights"), ("resnet34", "ResNet34_Weights"), ("resnet50", "ResNet50_Weights"),
    ("mobilenet_v2", "MobileNet_V2_Weights"), ("mobilenet_v3_small", "MobileNet_V3_Small_Weights"),
    ("mobilenet_v3_large", "MobileNet_V3_Large_Weights"), ("efficientnet_b0", "EfficientNet_B0_Weights"),
]:
    register_torchvision(_name, getattr(torchvision.models, _name), _enum)


def _names() -> tuple[str, ...]:
    return tuple(sorted(_BUILDERS))


def _problem(arch: str) -> str | None:
    return None if arch in _BUILDERS else f"unknown student {arch!r}; choose one of: {', '.join(_names())}"


def _build(arch: str, weights: str) -> tuple[nn.Module, int]:
    """(the model without its last Linear, that Linear's input width)."""
    model = _BUILDERS[arch](weights=None)
    if weights == "imagenet":
        model.load_state_dict(_imagenet_state_dict(arch))
    elif weights != "none":
        model.load_state_dict(read_state_dict(Path(weights), arch))
    return model, _strip_last_linear(model)


def _strip_last_linear(model: nn.Module) -> int:
    """Replace the model's last nn.Linear by Identity and return its input width."""
    parent, attr, linear = None, None, None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            path = name.rsplit(".", 1)
            parent = model.get_submodule(path[0]) if len(path) == 2 else model
            attr, linear = path[-1], module
    assert linear is not None and parent is not None, "torchvision classifier has a Linear head"
    setattr(parent, attr, nn.Identity())
    return linear.in_features


def _missing_weights(arch: str, weights: str) -> str | None:
    """ImageNet weights neither in torch's hub cache nor downloadable: the file, where it goes, the alternatives."""
    if weights != "imagenet" or arch not in _BUILDERS:
        return weights_file_problem(arch, weights)
    enum = getattr(torchvision.models, _WEIGHTS[arch]).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)
    if cached.is_file() or reachable("download.pytorch.org"):
        return None
    return (f"ImageNet weights for the student {arch} are not cached and download.pytorch.org is unreachable: "
            f"download {enum.url} on a machine with internet and put it at {cached}, pass "
            f"student.weights=<path to the .pth file>, or train from scratch with student.weights=none")


def _imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    missing = _missing_weights(arch, "imagenet")
    if missing:
        raise UserError(missing)
    return getattr(torchvision.models, _WEIGHTS[arch]).DEFAULT.get_state_dict(progress=False, check_hash=True)


FAMILY = register_family(StudentFamily(prefix="", build=_build, problem=_problem, names=_names,
                                       hint=f"torchvision models ({', '.join(_names())})",
                                       missing_weights=_missing_weights))
