"""Adding a student family touches one new file: a module that registers its prefix. ``student.arch=toy:8``
then builds, trains (with the teacher's condensation heads at its width), checkpoints and loads back."""
from __future__ import annotations

import importlib.util

import pytest
import torch

import students.families.base as base
from distill.config import load_config
from distill.train import fit
from formats.errors import UserError
from students.checkpoint import load_student
from students.registry import create_student, deployable, list_students
from tests.conftest import REPO, demo_overrides

FAMILY = '''"""A toy student family, toy:<width>: one strided convolution, a ReLU and a global average pool."""
from torch import nn

from students.families.base import StudentFamily, register_family

PREFIX = "toy:"


def build(arch: str, weights: str) -> tuple[nn.Module, int]:
    width = int(arch[len(PREFIX):])
    backbone = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten())  # (B, 3, H, W) -> (B, width)
    return backbone, width


def problem(arch: str) -> str | None:
    name = arch[len(PREFIX):]
    return None if name.isdigit() and int(name) > 0 else f"unknown toy student {arch!r}: write toy:<width>, e.g. toy:8"


register_family(StudentFamily(prefix=PREFIX, build=build, problem=problem, names=lambda: ("toy:8",),
                              hint="toy:<width>"))
'''


@pytest.fixture
def install(tmp_path, monkeypatch):
    """Import the toy family's module (once called); the registry is restored after the test."""
    monkeypatch.setattr(base, "_FAMILIES", dict(base._FAMILIES))
    path = tmp_path / "toy_family.py"
    path.write_text(FAMILY)

    def load():
        spec = importlib.util.spec_from_file_location("toy_family", path)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    return load


def test_a_family_module_registers_its_prefix(install):
    with pytest.raises(UserError, match="no student family has the prefix 'toy:'; registered: .*'timm:'"):
        create_student("toy:8", 3)
    install()
    student = create_student("toy:8", 3)
    assert student.feature_dim == 8 and student(torch.randn(2, 3, 16, 16)).shape == (2, 3)
    assert list_students()[-1] == "toy:8" and deployable(student, (16, 16)) is student
    with pytest.raises(UserError, match="unknown toy student 'toy:eight': write toy:<width>"):
        create_student("toy:eight", 3)


def test_a_family_module_trains_checkpoints_and_loads(install, synthetic_root, tmp_path):
    install()
    cfg = load_config(REPO / "configs" / "demo.yaml", demo_overrides(synthetic_root, tmp_path / "runs", **{
        "student.arch": "toy:8", "train.epochs": 1, "data.check_images": False}))
    best = fit(cfg)
    student, meta = load_student(best)
    assert (meta.arch, meta.feature_dim, student.feature_dim) == ("toy:8", 8, 8)
    trained = torch.load(best, weights_only=True)["state_dict"]
    assert all(torch.equal(v, trained[k]) for k, v in student.state_dict().items())
