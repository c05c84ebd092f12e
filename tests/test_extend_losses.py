"""Adding a KD loss term touches one new file: a module that registers it. Its weight is then a config key
(``method.w_<name>``), it enters the step's loss with that weight, and training logs it."""
from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
import torch.nn.functional as F

import distill.loss_terms as loss_terms
from distill.config import MethodConfig, load_config
from distill.heads import Condensation
from distill.method import step_losses
from distill.train import fit, loss_names
from formats.errors import UserError
from students.registry import create_student
from tests.conftest import REPO, demo_overrides

TERM = '''"""A toy KD term: the student's feature norms pulled to 1."""
import torch

from distill.loss_terms import LossTerm, TermInputs, register_term


def feature_norm(x: TermInputs) -> torch.Tensor:
    """L_norm = 1/B Σ_b (‖h_b‖ − 1)²."""
    return (x.h.norm(dim=-1) - 1).pow(2).mean()


register_term(LossTerm("norm", feature_norm, default_weight=0.0))
'''


@pytest.fixture
def install(tmp_path, monkeypatch):
    """Import the toy term's module (once called); the registry is restored after the test."""
    monkeypatch.setattr(loss_terms, "_TERMS", dict(loss_terms._TERMS))
    path = tmp_path / "toy_term.py"
    path.write_text(TERM)

    def load():
        spec = importlib.util.spec_from_file_location("toy_term", path)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    return load


def test_a_term_module_adds_a_weight_key_and_a_weighted_term_of_the_loss(install):
    with pytest.raises(UserError, match="unknown config key method.w_norm"):
        load_config(None, ["method.w_norm=0.5"])
    torch.manual_seed(0)
    student = create_student("resnet18", 5, "none").eval()
    heads = Condensation(F.normalize(torch.randn(5, 16), dim=-1), student.feature_dim)
    x, y, t = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 1, 4]), F.normalize(torch.randn(4, 16), dim=-1)
    before = step_losses(student, heads, x, y, t, MethodConfig(), 0.4)

    install()
    method = load_config(None, ["method.w_norm=0.5"]).method
    assert method.term_weights() == {"vis": 1.0, "ling": 1.0, "norm": 0.5}
    with pytest.raises(UserError, match="did you mean method.w_norm"):
        load_config(None, ["method.w_nrom=0.5"])
    off = step_losses(student, heads, x, y, t, load_config(None).method, 0.4)  # its default weight: 0
    assert torch.equal(off["loss"], before["loss"])  # an added term at weight 0 changes no number
    on = step_losses(student, heads, x, y, t, method, 0.4)
    h = student.features(x)
    assert torch.allclose(on["norm"], (h.norm(dim=-1) - 1).pow(2).mean(), rtol=1e-5)
    assert torch.allclose(on["loss"] - off["loss"], (1 - 0.4) * 0.5 * on["norm"] / 2, rtol=1e-4, atol=1e-6)
    assert loss_names() == ("loss", "cls", "vis", "ling", "norm", "vis_u", "ling_u", "norm_u")


def test_a_term_module_trains_and_its_term_is_logged(install, synthetic_root, tmp_path):
    install()
    cfg = load_config(REPO / "configs" / "demo.yaml", demo_overrides(synthetic_root, tmp_path / "runs", **{
        "method.w_norm": 0.5, "train.epochs": 1, "student.arch": "mobilenet_v3_small", "data.check_images": False,
        "data.input_size": 16, "data.resize_size": 18}))
    best = fit(cfg)
    record = json.loads((best.parent / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(record["train_norm"]) and record["train_norm"] > 0
    assert {"train_loss", "train_cls", "train_vis", "train_ling"} <= set(record)
    assert "w_norm: 0.5" in (best.parent / "config.yaml").read_text()  # the run's config names its weight
