"""Registry of students (torchvision names, and ``timm:<name>``), each split into a feature
backbone and a linear classifier.

``Student.features(x)`` gives the unnormalised features ``h`` (B×d) that the distillation losses
use; ``Student(x)`` gives ``logits = W h`` (B×C). The width ``d`` is discovered from the model
(torchvision: its last ``nn.Linear``; timm: its pre-logits width), never hard-coded, so every
family works. ``deployable`` gives the inference form that export and the reference row use.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn

from formats.errors import UserError
from students.timm_students import SHIPPED, check_timm_name, create_timm_backbone, fuse, is_timm, static_same_padding
from students.weights import read_state_dict

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_WEIGHTS: dict[str, str] = {}


def register_student(name: str, builder: Callable[..., nn.Module], weights_enum: str) -> None:
    """Add a torchvision builder (``weights=`` keyword) under ``name``; duplicates are an error."""
    if name in _REGISTRY:
        raise ValueError(f"student {name!r} is already registered")
    _REGISTRY[name] = builder
    _WEIGHTS[name] = weights_enum


for _name, _enum in [
    ("resnet18", "ResNet18_Weights"), ("resnet34", "ResNet34_Weights"), ("resnet50", "ResNet50_Weights"),
    ("mobilenet_v2", "MobileNet_V2_Weights"), ("mobilenet_v3_small", "MobileNet_V3_Small_Weights"),
    ("mobilenet_v3_large", "MobileNet_V3_Large_Weights"), ("efficientnet_b0", "EfficientNet_B0_Weights"),
]:
    register_student(_name, getattr(torchvision.models, _name), _enum)


def list_students() -> list[str]:
    """The torchvision students, then the tested timm families (any other ``timm:<name>`` works too)."""
    return sorted(_REGISTRY) + list(SHIPPED)


def check_arch(arch: str) -> None:
    """One error for an unknown student: the registered names, or timm's closest names."""
    if is_timm(arch):
        check_timm_name(arch)
    elif arch not in _REGISTRY:
        raise UserError(f"unknown student {arch!r}; choose one of: {', '.join(sorted(_REGISTRY))}, or any timm "
                        f"model as timm:<name> (tested: {', '.join(SHIPPED)})")


class Student(nn.Module):
    """Backbone giving (B, d) features (torchvision without its last Linear, or timm headless),
    plus a new ``classifier`` Linear(d, C)."""

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
    """Build a student; ``weights`` is ``imagenet``, ``none`` or a state_dict file."""
    check_arch(arch)
    if is_timm(arch):
        backbone, feature_dim = create_timm_backbone(arch, weights)
        return Student(backbone, feature_dim, num_classes, arch)
    model = _REGISTRY[arch](weights=None)
    if weights == "imagenet":
        model.load_state_dict(_imagenet_state_dict(arch))
    elif weights != "none":
        model.load_state_dict(read_state_dict(Path(weights), arch))
    feature_dim = _strip_last_linear(model)
    return Student(model, feature_dim, num_classes, arch)


def deployable(student: Student, input_size: tuple[int, int] | list[int]) -> Student:
    """The inference form of a trained student for (H, W) = ``input_size`` inputs (eval mode):
    re-parameterisable timm branches fused (MobileOne, FastViT, RepViT) and TF "same" padding fixed
    for that size (``tf_*``); the same function with fewer operations. Other students unchanged."""
    student = student.eval()
    if not is_timm(student.arch):
        return student
    return static_same_padding(fuse(student), (int(input_size[0]), int(input_size[1]))).eval()


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


def _imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    enum = getattr(torchvision.models, _WEIGHTS[arch]).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)
    if not cached.is_file() and not reachable("download.pytorch.org"):
        raise UserError(
            f"ImageNet weights for {arch} are not cached and download.pytorch.org is unreachable: "
            f"download {enum.url} on a machine with internet and put it at {cached}, pass "
            f"student.weights=<path to the .pth file>, or train from scratch with student.weights=none"
        )
    return enum.get_state_dict(progress=False, check_hash=True)


def reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Fast connectivity probe, so offline machines fail at once instead of retrying for minutes."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("VL2LITE_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
