"""Every registered student: builds, discovers its width, classifies, and fails clearly offline."""
import copy
import io

import onnx
import pytest
import torch

from formats.errors import UserError
from students.families.torchvision import register_torchvision
from students.registry import create_student, deployable, list_students, normalization_mismatch

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
        register_torchvision("resnet18", lambda **kw: None, "ResNet18_Weights")


def test_a_name_goes_to_the_family_of_its_prefix():
    from students.families.base import families, family_of, register_family
    assert [f.prefix for f in families()] == ["", "timm:"]  # every module of students/families/, found
    assert family_of("resnet18").prefix == "" and family_of("timm:resnet18").prefix == "timm:"
    with pytest.raises(UserError, match=r"unknown student 'tim:convnext_atto': no student family has the prefix "
                                        r"'tim:'; registered: no prefix: .*resnet18.*; 'timm:': any timm model"):
        create_student("tim:convnext_atto", 3)
    with pytest.raises(ValueError, match="prefix 'timm:' is already registered"):
        register_family(family_of("timm:convnext_atto"))


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
    fused = deployable(student, (32, 32))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref, out = student(x), fused(x)
    assert torch.allclose(out, ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()))  # the same function
    count = lambda m: sum(1 for _ in m.modules())  # noqa: E731
    assert count(fused) < count(student)  # its branches merged into single convolutions
    assert count(create_student(arch, 4)) == count(student)  # a copy: the training form is untouched


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("size", [(32, 32), (33, 30)])
def test_tf_same_padding_is_fixed_for_the_input_size(size):
    """TF "same" padding (timm's Conv2dSame / MaxPool2dSame / AvgPool2dSame, computed from the input's
    shape at run time) becomes fixed padding for the bundle's size: the same function, and an ONNX
    graph with no shape arithmetic (what made the ImageNet EfficientNet-Lite0 1.9x slower in INT8)."""
    from timm.layers import Conv2dSame
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    from students.families.timm import static_same_padding
    torch.manual_seed(0)
    model = torch.nn.Sequential(Conv2dSame(3, 4, 3, stride=2), torch.nn.ReLU(),  # asymmetric pad at an even size
                                Conv2dSame(4, 4, 4, stride=1, groups=4),  # an even kernel: asymmetric too
                                Conv2dSame(4, 4, 5, stride=1, dilation=2),  # symmetric: the conv's own padding
                                MaxPool2dSame(3, stride=2), AvgPool2dSame(3, stride=2)).eval()
    x = torch.randn(2, 3, *size) - 2  # mostly negative after the ReLU-free layers: -inf vs 0 padding matters
    with torch.no_grad():
        ref = model(x)
        fixed = static_same_padding(copy.deepcopy(model), size)
        out = fixed(x)
    # the same function through other conv code paths (explicit pad vs the conv's own): equal up to float32
    # rounding, which differs by the kernels a CPU picks; a wrong pad (0 vs -inf, one pixel off) moves outputs by O(1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    assert not any(isinstance(m, (Conv2dSame, MaxPool2dSame, AvgPool2dSame)) for m in fixed.modules())
    assert fixed[3].padding == (4, 4)
    graph = io.BytesIO()
    torch.onnx.export(fixed, (x,), graph, dynamo=False, opset_version=17)
    assert "Shape" not in {n.op_type for n in onnx.load_from_string(graph.getvalue()).graph.node}


@pytest.mark.cpu_kernels
def test_deployable_tf_student_matches_its_training_form():
    torch.manual_seed(0)
    student = create_student("timm:tf_efficientnet_lite0", 3).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        ref, out = student(x), deployable(student, (48, 48))(x)
    assert torch.allclose(out, ref, atol=1e-5 * float(ref.abs().max()))
    assert type(student.backbone.conv_stem).__name__ == "Conv2dSame"  # a copy: the training form is untouched


def test_timm_weights_trained_with_another_normalisation_are_named():
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    warning = normalization_mismatch("timm:tf_efficientnet_lite0", "imagenet", *imagenet)
    assert warning and "data.mean=[0.5, 0.5, 0.5] data.std=[0.5, 0.5, 0.5]" in warning
    assert normalization_mismatch("timm:tf_efficientnet_lite0", "imagenet", (0.5,) * 3, (0.5,) * 3) is None
    assert normalization_mismatch("timm:tf_efficientnet_lite0", "none", *imagenet) is None  # from scratch: any
    assert normalization_mismatch("timm:convnext_atto", "imagenet", *imagenet) is None
    assert normalization_mismatch("resnet18", "imagenet", (0.5,) * 3, (0.5,) * 3) is None
