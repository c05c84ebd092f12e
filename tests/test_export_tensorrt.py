"""TensorRT: the version-dependent plan and the sidecar (pure, tested here); the build needs TensorRT."""
from __future__ import annotations

import json

import pytest

from export import ExportOptions
from export.backends.tensorrt import (BACKEND, NOT_INSTALLED, device_info, engine_plans, engine_sidecar, in_chunks,
                                      tensorrt_version)
from export.registry import wanted_backends
from formats.errors import UserError
from formats.engine import read_sidecar, write_sidecar


def test_tensorrt_11_takes_precision_from_the_graph():
    plans = engine_plans(11, has_int8=True)
    assert [(p.file, p.source, p.strongly_typed, p.fp16_flag) for p in plans] == [
        ("model.fp16.engine", "model.fp16.onnx", True, False),
        ("model.int8.engine", "model.int8.trt.onnx", True, False)]


def test_tensorrt_10_uses_fp16_flag_and_qdq_for_int8():
    plans = engine_plans(10, has_int8=False)
    assert [(p.source, p.strongly_typed, p.fp16_flag) for p in plans] == [("model.onnx", False, True)]
    int8 = engine_plans(10, has_int8=True)[1]
    assert (int8.source, int8.strongly_typed, int8.fp16_flag) == ("model.int8.trt.onnx", True, False)


def test_sidecar_records_what_the_engine_depends_on(tmp_path):
    plan = engine_plans(10, has_int8=True)[1]
    device = {"cuda": "12.6", "gpu": "Orin", "compute_capability": "8.7"}
    side = engine_sidecar(plan, "10.3.0", device, (1, 8, 32), 2.0)
    assert side.tensorrt == "10.3.0" and side.compute_capability == "8.7" and side.gpu == "Orin"
    assert side.precision == "int8" and side.source == "model.int8.trt.onnx" and side.strongly_typed
    assert (side.min_batch, side.opt_batch, side.max_batch) == (1, 8, 32)
    path = tmp_path / "model.int8.engine.json"
    write_sidecar(path, side)  # as written beside the engine, and read back by the runtime on the device
    assert read_sidecar(path) == side and json.loads(path.read_text())["schema"] == "vl2lite-engine-sidecar"


def test_engine_evaluation_respects_the_profile_max_batch():
    import numpy as np
    seen = []

    def run(x):
        seen.append(len(x))
        return x[:, :2] * 3

    x = np.arange(70 * 4, dtype=np.float32).reshape(70, 4)
    np.testing.assert_array_equal(in_chunks(run, 32)(x), x[:, :2] * 3)
    assert seen == [32, 32, 6]


def test_device_info_without_gpu_is_explicit():
    info = device_info()
    assert set(info) == {"cuda", "gpu", "compute_capability"}


def test_trt_wanted_only_with_flag_and_fp16_graph_follows():
    assert BACKEND.is_wanted(ExportOptions(backends=("trt",))) and not BACKEND.is_wanted(ExportOptions())
    assert [b.name for b in wanted_backends(ExportOptions(backends=("trt",)))] == ["onnx", "fp16", "trt"]


@pytest.mark.skipif(tensorrt_version() is not None, reason="TensorRT is installed")
def test_trt_without_tensorrt_is_an_error_before_any_work_unless_best_effort(trained_checkpoint, tmp_path):
    from export import export_bundle
    with pytest.raises(UserError, match="--trt: TensorRT is not installed here.*--best-effort"):
        export_bundle(trained_checkpoint, tmp_path / "b", ExportOptions(backends=("trt",)))
    assert not (tmp_path / "b").exists()
    assert "TensorRT is not installed" in NOT_INSTALLED


@pytest.mark.tensorrt
def test_engines_build_with_tensorrt(trained_checkpoint, tmp_path):
    pytest.importorskip("tensorrt")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    from export import export_bundle
    out = export_bundle(trained_checkpoint, tmp_path / "b", ExportOptions(backends=("int8", "trt"), calib_images=64))
    manifest = json.loads((out / "manifest.json").read_text())
    engines = [a for a in manifest["artifacts"] if a["format"] == "tensorrt"]
    assert {a["precision"] for a in engines} == {"fp16", "int8"}
    for art in engines:
        side = json.loads((out / art["sidecar"]).read_text())
        assert side["tensorrt"] == manifest["tensorrt"] and side["precision"] == art["precision"]
        assert art["evaluated_with"] == "tensorrt" and art["parity"]["images"] > 0 and "top1" in art
    assert (out / "timing.cache").is_file()
