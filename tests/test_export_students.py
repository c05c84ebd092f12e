"""Every registered student (torchvision, and the timm families we ship) exports to ONNX (FP32 and INT8)
with PyTorch parity and a complete INT8 graph, not just resnet18."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distill.checkpoint import atomic_save
from export import ExportOptions, export_bundle
from export.evaluation import ort_session
from students.checkpoint import read_checkpoint
from students.registry import create_student, list_students


@pytest.mark.parametrize("arch", [a for a in list_students() if a != "resnet18"])  # resnet18: tests/test_export.py
def test_every_student_exports_with_parity(arch, trained_checkpoint, tmp_path):
    ckpt, _ = read_checkpoint(trained_checkpoint)  # its data, labels and preprocessing; another architecture
    torch.manual_seed(0)
    student = create_student(arch, ckpt["num_classes"]).eval()
    ckpt.update(arch=arch, feature_dim=student.feature_dim,
                state_dict={k: v.detach().clone() for k, v in student.state_dict().items()})
    atomic_save(ckpt, tmp_path / "best.pt")
    out = export_bundle(tmp_path / "best.pt", tmp_path / "bundle",
                        ExportOptions(backends=("int8",), eval_images=16, parity_images=16, calib_images=32,
                                      max_top1_drop=100.0, remedies=False))
    manifest = json.loads((out / "manifest.json").read_text())
    x = np.random.default_rng(1).normal(size=(3, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        ref = student(torch.from_numpy(x)).numpy()  # the training form: export fuses MobileOne/FastViT/RepViT
    # Random MobileOne weights give logits near 1e9 (its summed branches grow with depth until trained):
    # parity is judged relative to the logits' scale.
    scale = max(1.0, float(np.abs(ref).max()))
    fp32 = next(a for a in manifest["artifacts"] if a["file"] == "model.onnx")
    assert fp32["parity"]["top1_agreement"] == 1.0 and fp32["parity"]["max_abs_logit_diff"] < 1e-3 * scale
    np.testing.assert_allclose(ort_session(out / "model.onnx").run(None, {"input": x})[0], ref,
                               atol=1e-4 * scale, rtol=1e-3)
    int8 = next(a for a in manifest["artifacts"] if a["file"] == "model.int8.onnx")
    graph = int8["quantization"]["graph"]  # random weights: accuracy means nothing, the graph must be INT8
    assert graph["int8_weighted_ops"] == graph["weighted_ops"] > 0
