"""export.triton: every config.pbtxt is checked against Triton's own ModelConfig schema (tritonclient)."""
from __future__ import annotations

import pytest
from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig, ModelInstanceGroup

from export.backends.triton import config_pbtxt, model_name, validate_config, write_repository
from formats.manifest import ArtifactEntry

SHAPE, CLASSES, MAX_BATCH, DELAY = [3, 32, 32], 10, 16, 100
# The values the onnxruntime backend accepts for precision_mode (onnxruntime_backend README).
TRT_PRECISION_MODES = {"FP32", "FP16", "BF16", "INT8"}


def entry(file: str, format: str, precision: str, target: str) -> ArtifactEntry:
    """A manifest entry as the export backends write it (the figures do not matter here)."""
    return ArtifactEntry(file, format, precision, target, sha256="0" * 64, size_bytes=1, top1=0.9, top1_drop=0.0,
                         agreement=1.0)


# (artifact as the export backends write it, model name, platform, instance kind, precision_mode or None)
ARTIFACTS = [
    (entry("model.onnx", "onnx", "fp32", "any"),
     "demo_fp32", "onnxruntime_onnx", "KIND_AUTO", None),
    (entry("model.fp16.onnx", "onnx", "fp16", "gpu"),
     "demo_fp16", "onnxruntime_onnx", "KIND_GPU", None),
    (entry("model.int8.onnx", "onnx", "int8", "onnxruntime-cpu"),
     "demo_int8", "onnxruntime_onnx", "KIND_CPU", None),
    (entry("model.int8.trt.onnx", "onnx", "int8", "tensorrt"),
     "demo_int8_trt", "onnxruntime_onnx", "KIND_GPU", "INT8"),
    (entry("model.fp16.onnx", "onnx", "fp16", "tensorrt"),
     "demo_fp16_trt", "onnxruntime_onnx", "KIND_GPU", "FP16"),
    (entry("model.fp16.engine", "tensorrt", "fp16", "tensorrt"),
     "demo_fp16_engine", "tensorrt_plan", "KIND_GPU", None),
    (entry("model.int8.engine", "tensorrt", "int8", "tensorrt"),
     "demo_int8_engine", "tensorrt_plan", "KIND_GPU", None),
]


def check_config(cfg: ModelConfig, name: str, platform: str, kind: str, precision_mode: str | None) -> None:
    """The fields Triton reads, compared on the parsed ModelConfig message."""
    assert cfg.name == name and cfg.platform == platform and not cfg.backend
    assert cfg.max_batch_size == MAX_BATCH
    assert len(cfg.input) == 1 and len(cfg.output) == 1
    (inp,), (out,) = cfg.input, cfg.output
    assert (inp.name, inp.data_type, list(inp.dims)) == ("input", DataType.TYPE_FP32, SHAPE)
    assert (out.name, out.data_type, list(out.dims)) == ("logits", DataType.TYPE_FP32, [CLASSES])
    assert out.label_filename == "labels.txt"
    assert cfg.HasField("dynamic_batching") and cfg.dynamic_batching.max_queue_delay_microseconds == DELAY
    assert [(g.count, g.kind) for g in cfg.instance_group] == [(1, ModelInstanceGroup.Kind.Value(kind))]
    accelerators = cfg.optimization.execution_accelerators
    assert not accelerators.cpu_execution_accelerator
    if precision_mode is None:
        assert not accelerators.gpu_execution_accelerator
    else:
        (trt,) = accelerators.gpu_execution_accelerator
        assert trt.name == "tensorrt"
        assert dict(trt.parameters) == {"precision_mode": precision_mode}
        assert precision_mode in TRT_PRECISION_MODES


@pytest.mark.parametrize("artifact,name,platform,kind,precision_mode", ARTIFACTS,
                         ids=[a[1] for a in ARTIFACTS])
def test_every_artifact_kind_gives_a_config_the_schema_accepts(artifact, name, platform, kind, precision_mode):
    assert model_name("demo", artifact) == name
    cfg = validate_config(config_pbtxt(name, artifact, SHAPE, CLASSES, MAX_BATCH, DELAY))
    check_config(cfg, name, platform, kind, precision_mode)


def test_the_s8s8_model_runs_as_tensorrt_int8_not_plain_onnxruntime():
    art = entry("model.int8.trt.onnx", "onnx", "int8", "tensorrt")
    text = config_pbtxt("demo_int8_trt", art, SHAPE, CLASSES, MAX_BATCH, DELAY)
    accel = validate_config(text).optimization.execution_accelerators.gpu_execution_accelerator
    assert [(a.name, dict(a.parameters)) for a in accel] == [("tensorrt", {"precision_mode": "INT8"})]
    # Q/DQ graphs carry their scales: the backend refuses a calibration table for them.
    assert "calibration" not in text


def test_an_onnx_artifact_for_tensorrt_with_an_unknown_precision_is_refused(monkeypatch):
    import formats.manifest
    monkeypatch.setattr(formats.manifest, "PRECISIONS", (*formats.manifest.PRECISIONS, "int4"))  # one formats learns later
    art = entry("model.x.onnx", "onnx", "int4", "tensorrt")
    with pytest.raises(ValueError, match="precision_mode.*int4"):
        config_pbtxt("demo_int4_trt", art, SHAPE, CLASSES, MAX_BATCH, DELAY)


@pytest.mark.parametrize("good,bad", [
    ("max_batch_size: 16", "max_batch_sise: 16"),  # misspelt field
    ("kind: KIND_GPU", "kind: KIND_TPU"),  # enum value that does not exist
    ("data_type: TYPE_FP32", "data_type: TYPE_FLOAT32"),  # numpy-style name, not Triton's
    ("max_batch_size: 16", "max_batch_size: \"16\""),  # wrong type
    ("gpu_execution_accelerator [", "gpu_execution_accelerators ["),  # misspelt nested field
    ('platform: "onnxruntime_onnx"', 'platform: "onnxruntime_onnx"\nplatform: "tensorrt_plan"'),  # set twice
    ("dims: [ 10 ]", "dims: [ 10 ]\n  }\n"),  # unbalanced braces
], ids=["misspelt", "bad-kind", "bad-dtype", "wrong-type", "misspelt-nested", "duplicate", "unbalanced"])
def test_a_corrupted_config_is_rejected(good, bad):
    art = entry("model.int8.trt.onnx", "onnx", "int8", "tensorrt")
    text = config_pbtxt("demo_int8_trt", art, SHAPE, CLASSES, MAX_BATCH, DELAY)
    assert good in text
    validate_config(text)
    with pytest.raises(ValueError, match="not a valid Triton model config"):
        validate_config(text.replace(good, bad, 1))


def test_write_repository_lays_out_models_whose_configs_validate(tmp_path):
    (tmp_path / "labels.txt").write_text("".join(f"class{i}\n" for i in range(CLASSES)))
    artifacts = [a[0] for a in ARTIFACTS if a[1] != "demo_fp16_trt"]  # one artifact per file, as in a bundle
    for art in artifacts:
        (tmp_path / art.file).write_bytes(art.file.encode())
    names = write_repository(tmp_path, "demo", artifacts, SHAPE, CLASSES, MAX_BATCH, DELAY)
    expected = [a for a in ARTIFACTS if a[1] != "demo_fp16_trt"]
    assert names == [e[1] for e in expected]
    for art, name, platform, kind, precision_mode in expected:
        model = tmp_path / "triton" / name
        cfg = validate_config((model / "config.pbtxt").read_text())
        check_config(cfg, name, platform, kind, precision_mode)
        suffix = "plan" if platform == "tensorrt_plan" else "onnx"
        assert sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()) == [
            f"1/model.{suffix}", "config.pbtxt", "labels.txt"]
        assert (model / "1" / f"model.{suffix}").read_bytes() == art.file.encode()
        assert (model / "labels.txt").read_text() == (tmp_path / "labels.txt").read_text()
