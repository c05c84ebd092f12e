"""Strict config loading: did-you-mean, types, ranges, dotted overrides, CLI errors."""
import subprocess
import sys

import pytest

from distill.config import Config, dump_yaml, load_config
from formats.errors import UserError
from tests.conftest import REPO


def test_every_shipped_config_loads():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.train.name == path.stem


def test_cub_config_is_the_paper_setup():
    cfg = load_config(REPO / "configs" / "cub.yaml")
    assert (cfg.teacher.model, cfg.teacher.pretrained) == ("convnext_xxlarge", "laion2b_s34b_b82k_augreg_soup")
    assert (cfg.student.arch, cfg.student.weights) == ("resnet18", "imagenet")
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay) == ("adamw", 1e-4, 0.0)
    assert (cfg.train.scheduler, cfg.train.step_size, cfg.train.gamma, cfg.train.epochs) == ("step", 30, 0.5, 300)
    assert (cfg.method.temperature, cfg.method.schedule, cfg.data.batch_size) == (2.0, "reference", 512)
    m = cfg.method
    assert (m.anchors, m.visual, m.linguistic) == ("text", "l1", "condensed")
    assert m.term_weights() == {"vis": 1.0, "ling": 1.0}


@pytest.mark.parametrize("name", ["imagefolder", "aircraft", "flowers102", "pets", "dtd", "food101"])
def test_the_other_configs_carry_the_recommended_recipe(name):
    m = load_config(REPO / "configs" / f"{name}.yaml").method  # benchmarks/kd_ablation.py, rounds 1 and 3
    assert (m.anchors, m.visual, m.linguistic) == ("calibrated", "l1", "classifier")
    assert m.term_weights() == {"vis": 10.0, "ling": 3.0}


def test_overrides_are_typed_and_dotted():
    cfg = load_config(REPO / "configs" / "demo.yaml", ["train.epochs=20", "data.batch_size=64",
                                                       "data.mean=[0.5,0.5,0.5]", "train.lr=1e-3"])
    assert (cfg.train.epochs, cfg.data.batch_size, cfg.data.mean, cfg.train.lr) == (20, 64, (0.5, 0.5, 0.5), 1e-3)
    assert isinstance(cfg.train.lr, float)


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "did you mean train.epochs"),
    ("dat.root=x", "did you mean data"),
    ("data.batch_size=abc", "data.batch_size: expected int"),
    ("train.amp=1", "train.amp: expected bool"),
    ("data.val_fraction=1.5", "data.val_fraction: must be in (0, 1)"),
    ("method.schedule=cosine", "method.schedule: 'cosine' is not one of linear, reference, constant"),
    ("data.mean=[0.5,0.5]", "data.mean: expected 3 values"),
    ("data.prompts=['a photo']", "has no '{}'"),
    ("train.epochs", "is not key=value"),
    ("method.visual=l2", "method.visual: 'l2' is not one of l1, projected"),
    ("method.anchors=learned", "method.anchors: 'learned' is not one of text, calibrated"),
    ("method.w_vis=-1", "method.w_vis: must be >= 0"),
    ("method.w_lingg=1", "did you mean method.w_ling"),
    ("method.weights=[]", "unknown config key method.weights; valid keys: .*ramp_fraction, w_vis, w_ling, visual"),
    ("method.calibration_strengths=[]", "method.calibration_strengths: must be a non-empty list"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_config(REPO / "configs" / "demo.yaml", [override])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        load_config(bad)


@pytest.mark.parametrize("content,message", [
    ("data:\n  root: a\n  root: b\n".encode(), r"key 'root' is given twice \(lines 2 and 3\): keep one"),
    ("train:\n  epochs: 2\ntrain:\n  lr: 0.1\n".encode(), r"key 'train' is given twice \(lines 1 and 3\)"),
    ("data:\n  root: caf\xe9\n".encode("latin-1"), r"is not UTF-8 text \(byte 0xe9 at offset 17\): save it as UTF-8"),
    ("data:\n  root: x\n".encode("utf-16"), "is UTF-16 text: save it as UTF-8"),
], ids=["duplicate-key", "duplicate-section", "latin-1", "utf-16"])
def test_config_files_are_utf8_with_unique_keys(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_config(path)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("\ufeffdata:\n  root: café\n".encode("utf-8"))
    assert load_config(path).data.root == "café"


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(REPO / "configs" / "demo.yaml", ["train.epochs=5"])
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_yaml(cfg))
    assert load_config(saved) == cfg
    assert isinstance(Config(), Config)


def test_cli_reports_one_line_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "distill", "--config", "configs/demo.yaml", "train.epoch=3"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown config key train.epoch; did you mean train.epochs?"


def test_cli_help_lists_settable_keys():
    proc = subprocess.run([sys.executable, "-m", "distill", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    for key in ("data.root", "teacher.pretrained", "student.arch", "method.temperature", "train.resume"):
        assert key in proc.stdout
