"""export: a complete bundle from the tiny trained student (FP32, FP16, both INT8 flavours, Triton)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from export import ExportOptions, export_bundle
from export.evaluation import REFERENCE_SEMANTICS, ort_session
from export.int8.flavours import CPU, TENSORRT, verify_int8
from formats.bundle import MANIFEST, file_hashes, verify_bundle
from formats.files import sha256_file
from formats.manifest import Manifest
from formats.records import plain


@pytest.fixture(scope="session")
def bundle(exported_bundle):
    return exported_bundle


@pytest.fixture(scope="session")
def manifest(bundle):
    return json.loads((bundle / MANIFEST).read_text())


def _artifact(manifest, file):
    return next(a for a in manifest["artifacts"] if a["file"] == file)


def test_bundle_layout_and_manifest_contract(bundle, manifest, trained_checkpoint):
    assert manifest["schema"] == "vl2lite-bundle" and manifest["schema_version"] == 1
    assert [a["file"] for a in manifest["artifacts"]] == [
        "model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8.trt.onnx"]
    assert manifest["source_checkpoint"] == {"file": "best.pt", "sha256": sha256_file(trained_checkpoint),
                                             "epoch": manifest["source_checkpoint"]["epoch"]}
    assert manifest["input"] == {"name": "input", "shape": [-1, 3, 32, 32], "dtype": "float32"}
    assert manifest["output"]["shape"] == [-1, 10] and manifest["max_batch"] == 16
    assert manifest["reference"]["split"] == "test" and manifest["reference"]["images"] == 80
    assert manifest["tensorrt"] == "not installed"  # --trt without TensorRT: said, not hidden
    assert {"torch", "onnx", "onnxruntime", "export"} <= set(manifest["versions"])
    assert not list(bundle.parent.glob(".demo.*"))  # no staging folder left behind
    assert sorted(manifest["options"]["backends"]) == ["fp16", "int8", "triton", "trt"]  # what was asked


def test_the_manifest_reads_back_as_written(manifest):
    """Strict both ways: every nested record (verdicts, parity, quantization, triton) reads into its
    dataclass and writes back to the same JSON; an unknown key anywhere is refused, naming it."""
    from formats.errors import UserError
    typed = Manifest.from_dict(manifest, "manifest.json")
    assert typed.to_dict() == manifest
    cpu = next(a for a in typed.artifacts if a.file == "model.int8.onnx")
    assert cpu.quantization.graph.saturation.safe_on_every_x86 and cpu.budget.split == "val"
    assert typed.triton.models == ("demo_fp32", "demo_fp16", "demo_int8", "demo_int8_trt")
    broken = json.loads(json.dumps(manifest))
    broken["artifacts"][2]["quantization"]["graph"]["int8_weigthed_ops"] = 1  # a typo
    with pytest.raises(UserError, match=r"artifacts\[2\]: quantization: graph has an unknown field 'int8_weigthed_ops'"):
        Manifest.from_dict(broken, "manifest.json")
    del broken["artifacts"][2]["quantization"]["graph"]["int8_weigthed_ops"]
    del broken["artifacts"][0]["parity"]["images"]
    with pytest.raises(UserError, match=r"manifest.json: artifacts\[0\]: parity lacks the field 'images'"):
        Manifest.from_dict(broken, "manifest.json")


def test_every_file_is_hashed_and_verifies(bundle, manifest):
    assert manifest["files"] == file_hashes(bundle)
    assert "triton/demo_int8/1/model.onnx" in manifest["files"]
    for art in manifest["artifacts"]:
        assert art["sha256"] == manifest["files"][art["file"]] == sha256_file(bundle / art["file"])
        assert art["size_bytes"] == (bundle / art["file"]).stat().st_size
    assert verify_bundle(bundle)["name"] == "demo"


def test_verify_bundle_detects_tampering(bundle, tmp_path):
    import shutil

    from formats.errors import UserError
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    (copy / "labels.txt").write_text("tampered\n")
    with pytest.raises(UserError, match="does not match its manifest"):
        verify_bundle(copy)


def test_labels_preprocessing_and_onnx_metadata(bundle, trained_checkpoint):
    from students.checkpoint import read_checkpoint
    ckpt, _ = read_checkpoint(trained_checkpoint)
    assert (bundle / "labels.txt").read_text().splitlines() == ckpt["class_names"]
    pre = json.loads((bundle / "preprocessing.json").read_text())
    draft = pre.pop("jpeg_draft")  # export's own measurement; the transform is the checkpoint's
    assert pre == {k: v for k, v in ckpt["preprocessing"].items() if k != "jpeg_draft"}
    assert draft["images"] == 0 and not draft["accepted"]  # the test JPEGs are too small for a reduction
    for name in ("model.onnx", "model.int8.onnx", "model.int8.trt.onnx"):
        props = {p.key: p.value for p in onnx.load(str(bundle / name)).metadata_props}
        assert json.loads(props["class_names"]) == ckpt["class_names"]
        assert json.loads(props["preprocessing"]) == ckpt["preprocessing"]


def test_onnx_is_self_contained_with_dynamic_batch_and_matches_pytorch(bundle, manifest, trained_checkpoint):
    import torch

    from students.checkpoint import load_student
    model = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert not [p for p in bundle.iterdir() if p.suffix == ".data"]
    student, _ = load_student(trained_checkpoint)
    session = ort_session(bundle / "model.onnx")
    for batch in (1, 5, 16):  # dynamic batch axis
        x = np.random.default_rng(batch).normal(size=(batch, 3, 32, 32)).astype(np.float32)
        with torch.inference_mode():
            ref = student(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(session.run(None, {"input": x})[0], ref, atol=1e-4, rtol=1e-4)
    fp32 = _artifact(manifest, "model.onnx")
    assert fp32["parity"]["max_abs_logit_diff"] < 1e-3 and fp32["parity"]["top1_agreement"] == 1.0
    assert fp32["top1_drop"] == 0.0 and fp32["agreement"] == 1.0


def test_fp16_keeps_float32_interface(bundle, manifest):
    model = onnx.load(str(bundle / "model.fp16.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    fp16 = _artifact(manifest, "model.fp16.onnx")
    assert fp16["precision"] == "fp16" and fp16["target"] == "gpu"
    assert 0 < fp16["parity"]["max_abs_logit_diff"] < 0.1


def test_int8_flavours_are_really_int8_and_within_budget(bundle, manifest):
    cpu, trt = _artifact(manifest, "model.int8.onnx"), _artifact(manifest, "model.int8.trt.onnx")
    assert cpu["quantization"]["activations"] == "uint8" and trt["quantization"]["activations"] == "int8"
    assert trt["quantization"]["symmetric"] and trt["evaluated_with"] == REFERENCE_SEMANTICS
    for art, flavour in ((cpu, CPU), (trt, TENSORRT)):
        counts = verify_int8(bundle / art["file"], flavour, tuple(art["quantization"]["excluded_nodes"]))
        assert plain(counts) == art["quantization"]["graph"] and counts.int8_initializers >= 20
        excluded = len(art["quantization"]["excluded_nodes"])
        assert counts.int8_weighted_ops == counts.weighted_ops - excluded  # every conv and the fc
    assert _artifact(manifest, "model.int8.trt.onnx")["quantization"]["graph"]["int32_dequantize"] == 0
    assert cpu["quantization"]["graph"]["int32_dequantize"] > 0  # onnxruntime's CPU kernels take INT32 biases
    for art, flavour in ((cpu, CPU), (trt, TENSORRT)):
        chosen = art["quantization"]["selected_on"]  # the ladder judged on val, never on test
        assert chosen["split"] == "val" and chosen["images"] == 30
        assert chosen["top1_drop"] <= manifest["budget"]["max_top1_drop"]
        verdict = art["budget"]  # the one rule: judged where the recipe was chosen
        assert (verdict["split"], verdict["top1_drop"], verdict["within_budget"]) == ("val", chosen["top1_drop"], True)
        assert art["quantization"]["calibration_images"] == 64
    # int8 weights: about a quarter of the fp32 file
    assert cpu["size_bytes"] < 0.3 * _artifact(manifest, "model.onnx")["size_bytes"]


def test_every_artifact_has_a_verdict_by_the_one_budget_rule(manifest):
    budget = manifest["budget"]["max_top1_drop"]
    for art in manifest["artifacts"]:
        verdict = art["budget"]
        assert verdict["split"] == "val" and verdict["images"] == 30, art["file"]
        assert verdict["within_budget"] == (verdict["top1_drop"] <= budget), art["file"]


def test_reported_int8_top1_is_the_test_split_figure(bundle, manifest, trained_checkpoint):
    from export.data import training_splits
    from export.evaluation import ImageBatches, ort_runner, predict
    from students.checkpoint import read_checkpoint
    ckpt, meta = read_checkpoint(trained_checkpoint)
    test = ImageBatches(training_splits(meta, None).test, ckpt["preprocessing"], 32, 0)
    for file, fused in (("model.int8.onnx", True), ("model.int8.trt.onnx", False)):  # TensorRT's: reference semantics
        top1 = predict(ort_runner(bundle / file, optimize=fused), test).accuracy()
        assert _artifact(manifest, file)["top1"] == pytest.approx(top1, abs=1e-6)


def test_every_drop_carries_its_paired_interval(manifest):
    for art in manifest["artifacts"]:
        assert art["top1_drop_ci95"] >= 0.0, art["file"]
        if art["agreement"] == 1.0:
            assert art["top1_drop_ci95"] == 0.0, art["file"]  # no image changed: the drop is exact


def test_drop_interval_counts_only_images_that_changed_correctness():
    from export.evaluation import Predictions, accuracy_entry
    labels = np.zeros(1000, dtype=np.int64)
    onehot = lambda top: np.eye(3, dtype=np.float32)[top]  # noqa: E731  (N,) -> (N, 3) logits
    ref_top = np.zeros(1000, dtype=np.int64)
    ref_top[:300] = 1  # the reference is right on 700 images
    top = ref_top.copy()
    top[300:360] = 1  # 60 images lost
    top[:40] = 0  # 40 won
    top[360:400] = 2  # 40 lost...
    top[400:440] = 2
    top[100:140] = 2  # ... and 40 changed between two wrong classes: no effect on the drop
    entry = accuracy_entry(Predictions(onehot(top), labels), Predictions(onehot(ref_top), labels))
    lost, won, n = 140, 40, 1000
    d = (lost - won) / n
    assert entry["top1_drop"] == pytest.approx(100 * d)
    assert entry["top1_drop_ci95"] == pytest.approx(100 * 1.96 * np.sqrt(((lost + won) / n - d * d) / n), abs=1e-4)
    assert entry["agreement"] == pytest.approx(1 - 220 / n)


def test_int8_graph_of_the_wrong_flavour_is_refused(bundle):
    with pytest.raises(RuntimeError, match="not an INT8"):
        verify_int8(bundle / "model.int8.onnx", TENSORRT)  # uint8 activations are not the S8S8 flavour
    with pytest.raises(RuntimeError, match="INT32 DequantizeLinear \\(quantized biases\\)"):
        verify_int8(bundle / "model.int8.onnx", TENSORRT)
    with pytest.raises(RuntimeError, match="not an INT8"):
        verify_int8(bundle / "model.onnx", CPU)


def test_triton_repository(bundle, manifest):
    from tritonclient.grpc.model_config_pb2 import DataType, ModelInstanceGroup

    from export.backends.triton import validate_config
    models = manifest["triton"]["models"]
    assert models == ["demo_fp32", "demo_fp16", "demo_int8", "demo_int8_trt"]
    for name, art in zip(models, manifest["artifacts"]):
        cfg = validate_config((bundle / "triton" / name / "config.pbtxt").read_text())  # Triton's own schema
        assert cfg.name == name and cfg.platform == "onnxruntime_onnx"
        assert cfg.max_batch_size == 16
        (inp,), (out,) = cfg.input, cfg.output
        assert (inp.name, inp.data_type, list(inp.dims)) == ("input", DataType.TYPE_FP32, [3, 32, 32])
        assert (out.name, out.data_type, list(out.dims)) == ("logits", DataType.TYPE_FP32, [10])
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
        kind = {"onnxruntime-cpu": ModelInstanceGroup.KIND_CPU, "any": ModelInstanceGroup.KIND_AUTO}.get(
            art["target"], ModelInstanceGroup.KIND_GPU)
        assert [g.kind for g in cfg.instance_group] == [kind]
        gpu = cfg.optimization.execution_accelerators.gpu_execution_accelerator
        accel = [(a.name, dict(a.parameters)) for a in gpu]
        # the S8S8 graph runs through onnxruntime's TensorRT accelerator in INT8, the others without it
        assert accel == ([("tensorrt", {"precision_mode": "INT8"})] if art["target"] == "tensorrt" else [])
        assert sha256_file(bundle / "triton" / name / "1" / "model.onnx") == art["sha256"]


def test_existing_output_is_refused_then_replaced_with_overwrite(bundle, trained_checkpoint, tmp_path):
    import shutil

    from formats.errors import UserError
    out = tmp_path / "b"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(UserError, match="already exists: pass --overwrite"):
        export_bundle(trained_checkpoint, out, ExportOptions(eval_images=16))
    with pytest.raises(UserError, match="replaces bundles only"):  # never deletes a folder of other files
        export_bundle(trained_checkpoint, out, ExportOptions(eval_images=16, overwrite=True))
    assert (out / "old.txt").read_text() == "old"
    (out / "old.txt").unlink()
    export_bundle(trained_checkpoint, out, ExportOptions(eval_images=16, overwrite=True))  # empty: allowed
    (out / "stale.txt").write_text("stale")
    export_bundle(trained_checkpoint, out, ExportOptions(eval_images=16, overwrite=True))  # a bundle: replaced
    assert not (out / "stale.txt").exists() and (out / MANIFEST).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    inside = out / "best.pt"
    shutil.copy(trained_checkpoint, inside)
    with pytest.raises(UserError, match="lies inside"):
        export_bundle(inside, out, ExportOptions(eval_images=16, overwrite=True))
    assert inside.is_file()


def test_a_folder_that_appears_during_the_export_is_never_replaced(trained_checkpoint, tmp_path, monkeypatch):
    import export.api as api
    from formats.errors import UserError
    real = api.build_manifest
    for name, overwrite, message in (("b", False, "already exists"), ("c", True, "replaces bundles only")):
        out = tmp_path / name

        def someone_writes_there(*args, out=out, **kwargs):  # out was free when the export began
            out.mkdir()
            (out / "notes.txt").write_text("mine")
            return real(*args, **kwargs)

        monkeypatch.setattr(api, "build_manifest", someone_writes_there)
        with pytest.raises(UserError, match=message):
            export_bundle(trained_checkpoint, out, ExportOptions(eval_images=16, overwrite=overwrite))
        assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c"]  # no staging folder left behind
