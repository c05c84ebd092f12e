"""Before any work, everything a run needs from the network is checked, and all that is missing is one error."""
import pytest
import torch

from distill.calibrate import Calibration, TeacherEmbeddings, diagnostics
from distill.config import load_config, with_overrides
from distill.preflight import preflight, teacher_needed
from distill.train import fit
from formats.errors import UserError
from students.families.base import StudentFamily, register_family
from students.registry import missing_weights
from tests.conftest import REPO, demo_overrides

HUB_TEACHER = "hf-hub:nobody/no-such-clip"  # never in the cache; offline (conftest: HF_HUB_OFFLINE=1)


def demo(root, out, **extra):
    return load_config(REPO / "configs" / "demo.yaml", demo_overrides(root, out, **{"teacher.cache_views": 2, **extra}))


@pytest.fixture
def no_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torchvision's weights: not cached here


def test_a_hub_teacher_and_imagenet_student_weights_are_one_error_naming_both(synthetic_root, tmp_path,
                                                                               no_torch_cache):
    cfg = demo(synthetic_root, tmp_path / "runs", **{"teacher.model": HUB_TEACHER, "student.weights": "imagenet"})
    with pytest.raises(UserError) as exc:
        fit(cfg)
    text = str(exc.value)
    assert text.startswith("this run needs 2 thing(s) that are not here (nothing was started")
    assert f"1. teacher {HUB_TEACHER} is not cached" in text and "python -m distill teacher" in text
    assert "2. ImageNet weights for the student resnet18 are not cached" in text and "resnet18-" in text
    assert "student.weights=none" in text and str(tmp_path / "torch") in text  # the file, where it goes
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_every_student_of_a_sweep_and_a_dataset_download_are_listed_too(tmp_path, no_torch_cache):
    cfg = load_config(REPO / "configs" / "dtd.yaml", {
        "data.root": str(tmp_path / "datasets"), "data.download": True, "teacher.model": HUB_TEACHER,
        "train.out_dir": str(tmp_path / "runs")})
    with pytest.raises(UserError) as exc:
        preflight(cfg, ["resnet18", "mobilenet_v3_small"])
    text = str(exc.value)
    assert "needs 4 thing(s)" in text and "data.download=true cannot reach www.robots.ox.ac.uk" in text
    assert HUB_TEACHER in text and "student resnet18" in text and "student mobilenet_v3_small" in text


def test_a_family_states_its_own_missing_weights(synthetic_root, tmp_path, monkeypatch):
    from students.families import base

    monkeypatch.setattr(base, "_FAMILIES", dict(base._FAMILIES))  # the toy family leaves with the test

    def build(arch, weights):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(8)), 8
    register_family(StudentFamily("offline-toy:", build, lambda arch: None, lambda: ("offline-toy:1",), "toys",
                                  missing_weights=lambda arch, w: f"toy weights for {arch} are on a floppy"
                                  if w == "imagenet" else None))
    assert missing_weights("offline-toy:1", "imagenet") == "toy weights for offline-toy:1 are on a floppy"
    assert missing_weights("offline-toy:1", "none") is None
    assert "not found" in missing_weights("resnet18", str(tmp_path / "missing.pth"))  # a local file: the default
    cfg = demo(synthetic_root, tmp_path, **{"student.arch": "offline-toy:1", "student.weights": "imagenet"})
    with pytest.raises(UserError, match="^toy weights for offline-toy:1 are on a floppy$"):  # alone: one line
        preflight(cfg)


def test_a_complete_cache_needs_no_teacher(synthetic_root, tmp_path):
    from distill.cache_ready import prepare_cache

    cfg = demo(synthetic_root, tmp_path)
    inputs = preflight(cfg)
    assert teacher_needed(cfg, inputs)  # nothing built yet
    prepare_cache(cfg, inputs)
    assert not teacher_needed(cfg, inputs)
    assert teacher_needed(with_overrides(cfg, {"teacher.cache": "online"}), inputs)


def test_teacher_warnings_never_advise_what_the_run_already_does():
    gen = torch.Generator().manual_seed(0)
    unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape, generator=gen), dim=-1)  # noqa: E731
    text = unit(4, 8)
    emb = TeacherEmbeddings(unit(20, 2, 8), torch.arange(20) % 4, unit(12, 8), torch.tensor([0, 1, 2, 3] * 3),
                            -text)  # the prompts point away from every image: zero-shot far below chance
    kept = Calibration(text, "text", None, reason="no calibrated candidate beat the prompts on validation")
    paper = diagnostics(emb, kept, "text")["warnings"]
    assert len(paper) == 1 and "use method.anchors=calibrated" in paper[0]
    calibrated = diagnostics(emb, kept, "calibrated")["warnings"]
    assert len(calibrated) == 1 and "use method.anchors=calibrated" not in calibrated[0]
    assert "method.anchors=calibrated kept the prompts (no calibrated candidate beat" in calibrated[0]
