"""Every registered student: builds, discovers its width, classifies, and fails clearly offline."""
import pytest
import torch

from formats.errors import UserError
from students.registry import create_student, deployable, list_students, register_student

EXPECTED_WIDTH = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "mobilenet_v2": 1280,
                  "mobilenet_v3_small": 1024, "mobilenet_v3_large": 1280, "efficientnet_b0": 1280,
                  # timm: the pre-logits width (after MobileNetV4/GhostNet/EfficientViT's conv head)
                  "timm:mobilenetv4_conv_small": 1280, "timm:efficientvit_b0": 1280, "timm:fastvit_t8": 768,
                  "timm:repvit_m0_9": 384, "timm:mobileone_s0": 1024, "timm:ghostnet_100": 1280,
                  "timm:efficientnet_lite0": 1280, "timm:convnext_atto": 320}


@pytest.mark.parametrize("arch", list_students())
def test_student_forward_and_width(arch):
    student = create_student(arch, num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h, logits = student.features(x), student(x)
    assert h.shape == (2, student.feature_dim) and logits.shape == (2, 7)
    assert student.feature_dim == EXPECTED_WIDTH[arch]


def test_registry_errors():
    with pytest.raises(UserError, match="unknown student 'resnet19'; choose one of: .*resnet18.*timm:<name>"):
        create_student("resnet19", 3)
    with pytest.raises(UserError, match="unknown timm student 'timm:mobilenetv4_conv_smal': did you mean "
                                        "timm:mobilenetv4_conv_small"):
        create_student("timm:mobilenetv4_conv_smal", 3)
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


def test_timm_imagenet_weights_offline_fail_fast_naming_the_file(monkeypatch, tmp_path):
    import huggingface_hub.constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty hub cache
    with pytest.raises(UserError, match=r"not in the Hugging Face cache .*huggingface.co/timm/mobilenetv4_conv_small"
                                        r"\.[^/]+/resolve/main/model\.safetensors .*student.weights=none"):
        create_student("timm:mobilenetv4_conv_small", 3, weights="imagenet")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_local_weights_with_imagenet_classifier(tmp_path, suffix):
    import timm
    from safetensors.torch import save_file
    torch.manual_seed(0)
    full = timm.create_model("convnext_atto", num_classes=1000)  # as timm's ImageNet files are: with the head
    path = tmp_path / f"atto{suffix}"
    (save_file if suffix == ".safetensors" else torch.save)(full.state_dict(), str(path))
    student = create_student("timm:convnext_atto", 5, weights=str(path))
    assert torch.equal(student.backbone.stem[0].weight, full.stem[0].weight)
    with pytest.raises(UserError, match="does not fit timm:repvit_m0_9"):
        create_student("timm:repvit_m0_9", 5, weights=str(path))


@pytest.mark.parametrize("arch", ["timm:mobileone_s0", "timm:repvit_m0_9", "timm:fastvit_t8"])
def test_reparameterisable_students_are_fused_for_deployment(arch):
    torch.manual_seed(0)
    student = create_student(arch, 4).eval()
    fused = deployable(student)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref, out = student(x), fused(x)
    assert torch.allclose(out, ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()))  # the same function
    count = lambda m: sum(1 for _ in m.modules())  # noqa: E731
    assert count(fused) < count(student)  # its branches merged into single convolutions
    assert count(create_student(arch, 4)) == count(student)  # a copy: the training form is untouched


def test_timm_weights_trained_with_another_normalisation_are_named():
    from students.timm_students import normalization_mismatch
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    warning = normalization_mismatch("timm:tf_efficientnet_lite0", "imagenet", *imagenet)
    assert warning and "data.mean=[0.5, 0.5, 0.5] data.std=[0.5, 0.5, 0.5]" in warning
    assert normalization_mismatch("timm:tf_efficientnet_lite0", "imagenet", (0.5,) * 3, (0.5,) * 3) is None
    assert normalization_mismatch("timm:tf_efficientnet_lite0", "none", *imagenet) is None  # from scratch: any
    assert normalization_mismatch("timm:convnext_atto", "imagenet", *imagenet) is None
    assert normalization_mismatch("resnet18", "imagenet", (0.5,) * 3, (0.5,) * 3) is None
