"""Every registered student: builds, discovers its width, classifies, and fails clearly offline."""
import pytest
import torch

from formats.errors import UserError
from students.registry import create_student, list_students, register_student

EXPECTED_WIDTH = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "mobilenet_v2": 1280,
                  "mobilenet_v3_small": 1024, "mobilenet_v3_large": 1280, "efficientnet_b0": 1280}


@pytest.mark.parametrize("arch", list_students())
def test_student_forward_and_width(arch):
    student = create_student(arch, num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h, logits = student.features(x), student(x)
    assert h.shape == (2, student.feature_dim) and logits.shape == (2, 7)
    assert student.feature_dim == EXPECTED_WIDTH[arch]


def test_registry_errors():
    with pytest.raises(UserError, match="unknown student 'resnet19'; choose one of: .*resnet18"):
        create_student("resnet19", 3)
    with pytest.raises(ValueError, match="already registered"):
        register_student("resnet18", lambda **kw: None, "ResNet18_Weights")


def test_imagenet_weights_offline_fail_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty weights cache
    with pytest.raises(UserError, match="not cached .* student.weights=none"):
        create_student("resnet18", 3, weights="imagenet")


def test_local_weights_file(tmp_path):
    import torchvision
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    assert create_student("resnet18", 4, weights=str(path)).feature_dim == 512
    with pytest.raises(UserError, match="not found"):
        create_student("resnet18", 4, weights=str(tmp_path / "missing.pth"))
