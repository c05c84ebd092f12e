"""Quantization-aware training: the torch graph is the graph onnxruntime runs, training writes back
into it, and export publishes it without calibration (and refuses graphs of another checkpoint)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort_module
import pytest
import torch

from export.data import training_splits
from export.evaluation import ImageBatches, ort_runner
from export.int8.fake_quant import WEIGHT_QMAX, fake_quant_weight, weight_scale
from export.int8.flavours import CPU, TENSORRT, quantize, verify_int8
from export.int8.graph import BatchReader, calibration_sample, preprocess
from export.int8.ladder import Recipe
from export.int8.qat_graph import QDQGraph
from export.onnx_file import export_onnx
from formats.datasets import SubsetSource
from formats.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graphs(trained_checkpoint, tmp_path_factory):
    """The trained student's preprocessed FP32 graph, its two post-training INT8 graphs and test images."""
    from students.checkpoint import load_student
    student, meta = load_student(trained_checkpoint)
    splits = training_splits(meta, None)
    pre = meta.preprocessing.to_dict()
    work = tmp_path_factory.mktemp("qat-graphs")
    export_onnx(student, work / "model.onnx", list(meta.input_size), 17)
    preprocess(work / "model.onnx", work / "pre.onnx")
    reader = BatchReader("input", calibration_sample(splits.train, pre, 64, 0, 32))
    for flavour in (CPU, TENSORRT):
        quantize(work / "pre.onnx", work / flavour.file, flavour, Recipe("minmax", 64), reader)
    x = np.concatenate([b for b, _ in ImageBatches(splits.test, pre, 40)])  # (80, 3, 32, 32)
    return work, x


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("flavour", [CPU, TENSORRT], ids=["u8s8", "s8s8"])
def test_the_torch_graph_computes_what_onnxruntime_runs_and_training_writes_back(graphs, flavour, tmp_path):
    work, x = graphs
    qdq = onnx.load(str(work / flavour.file))
    graph = QDQGraph(qdq, onnx.load(str(work / "pre.onnx")), weight_qmax=flavour.weight_qmax)
    fp32 = ort_runner(work / "pre.onnx")(x)
    with torch.no_grad():
        sim = graph(torch.from_numpy(x)).numpy()
    # as the flavour's runtime computes it: the CPU graph with onnxruntime's fused integer kernels (7-bit
    # weights: the same sums on every x86 CPU), the TensorRT graph by its Q/DQ reference semantics
    ort = flavour.runner(work / flavour.file)(x)
    # Same graph: the simulation is much closer to the deployed INT8 than either is to FP32... (B, C)
    assert (sim.argmax(1) == ort.argmax(1)).mean() >= 0.95
    assert np.abs(sim - ort).max() < 0.1 * np.abs(fp32).max()
    # ...and it computes the graph's reference Q/DQ semantics (onnxruntime op by op, no fused kernels), up to
    # the odd activation that lands on the other side of a rounding step (float division vs reciprocal; how
    # many depends on the CPU's float kernels): most images to float precision, those with such a flip a
    # little off (seen: 5 of 80 by 1.0% of the logit range; 21 of 80 by 0.9% with torch's AVX2 kernels), and
    # never another top-1. A wrong op would move every image.
    reference = ort_runner(work / flavour.file, optimize=False)(x)
    scale, diff = np.abs(fp32).max(), np.abs(sim - reference).max(axis=1)  # (B,)
    assert (sim.argmax(1) == reference.argmax(1)).all()
    assert np.median(diff) < 1e-3 * scale and diff.max() < 0.03 * scale
    # ...and a step of training changes the weights and scales, and onnxruntime runs the changed graph.
    opt = torch.optim.Adam([{"params": graph.weights(), "lr": 1e-2}, {"params": graph.scales(), "lr": 1e-3}])
    loss = graph(torch.from_numpy(x)).logsumexp(1).mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        trained = graph(torch.from_numpy(x)).numpy()
    onnx.save(graph.write_back(qdq), str(tmp_path / "trained.onnx"))
    written = ort_runner(tmp_path / "trained.onnx")(x)
    assert np.abs(trained - sim).max() > 10 * np.abs(written - trained).max()  # it moved; ORT followed
    counts = verify_int8(tmp_path / "trained.onnx", flavour)  # still a complete INT8 graph of the flavour
    assert counts == verify_int8(work / flavour.file, flavour)


@pytest.mark.cpu_kernels
def test_biases_run_on_the_int32_grid_onnxruntime_adds(graphs):
    from onnx import numpy_helper
    work, _ = graphs
    qdq = onnx.load(str(work / CPU.file))
    graph = QDQGraph(qdq, onnx.load(str(work / "pre.onnx")), weight_qmax=CPU.weight_qmax)
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    biases = [slot for slot in graph.slots.values() if slot.bias_of is not None]
    assert biases  # the CPU graph quantizes every Conv/Gemm bias to INT32
    for slot in biases:
        q, step = inits[slot.quantized].astype(np.int64), inits[slot.scale].astype(np.float64)  # deployed: q·step
        ours = graph._weight(slot).detach().double().numpy() / step
        assert np.allclose(ours, np.round(ours), atol=1e-3), slot.key  # on the grid...
        codes = np.round(ours).astype(np.int64)
        assert np.abs(codes - q).max() <= 1 and (codes == q).mean() >= 0.95, slot.key  # ...the deployed one
        assert not np.allclose(graph.params[slot.key].detach().double().numpy() / step, q, atol=1e-3)  # not float


@pytest.mark.cpu_kernels
def test_a_graph_torch_does_not_reproduce_is_refused_before_training(graphs):
    from export.int8.qat import check_fidelity
    work, x = graphs
    graph = QDQGraph(onnx.load(str(work / CPU.file)), onnx.load(str(work / "pre.onnx")), weight_qmax=CPU.weight_qmax)
    fidelity = check_fidelity(graph, work / CPU.file, [(x, None)])
    assert fidelity.agreement >= 0.95 and fidelity.against == "onnxruntime-cpu"
    with torch.no_grad():
        for p in graph.weights():
            p.mul_(torch.rand_like(p) * 4 - 2)  # the torch side no longer computes the graph onnxruntime runs
    with pytest.raises(UserError, match="cannot reproduce this student's INT8 graph in torch"):
        check_fidelity(graph, work / CPU.file, [(x, None)])


@pytest.mark.parametrize("qmax", [WEIGHT_QMAX, CPU.weight_qmax], ids=["8-bit", "7-bit"])
def test_weights_are_fake_quantized_per_channel_on_the_symmetric_grid(qmax):
    w = torch.randn(8, 4, 3, 3) * torch.linspace(0.01, 2.0, 8)[:, None, None, None]
    q = fake_quant_weight(w, 0, qmax)
    s = weight_scale(w, 0, qmax)[:, None, None, None]  # (8, 1, 1, 1)
    ints = q / s
    assert torch.allclose(ints, ints.round(), atol=1e-4) and ints.abs().max() <= qmax + 1e-4
    assert torch.allclose(ints.abs().amax(dim=(1, 2, 3)), torch.full((8,), float(qmax)))
    assert (q - w).abs().max() <= s.max() / 2 + 1e-6  # rounding error at most half a step per channel
    w.requires_grad_(True)
    fake_quant_weight(w, 0, qmax).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight-through gradient


def _run_one_node(node, inputs: dict, initializers: dict) -> tuple[np.ndarray, np.ndarray]:
    """(onnxruntime's output, the interpreter op's output) of one ONNX node."""
    from onnx import TensorProto, helper, numpy_helper

    from export.int8.qat_ops import OPS
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape)
                                            for k, v in inputs.items()],
                              [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    ref = ort_module.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, inputs)[0]
    values = {**inputs, **initializers}
    args = [torch.from_numpy(values[name]) for name in node.input]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return ref, OPS[node.op_type](None, node, args, attrs).numpy()


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([0], [4], [2], [1]), ([-1], [-(2 ** 63)], [2], [-1]), ([3], [0], [2], [-2]), ([1, -1], [100, 0], [1, 2], [1, -1]),
    ([-10], [10], [2], [3])], ids=["plain", "reverse", "reverse-step-2", "two-axes", "clamped"])
def test_slice_follows_onnx_including_negative_steps(starts, ends, axes, steps):
    from onnx import helper
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    node = helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"])
    ref, ours = _run_one_node(node, {"x": x}, {k: np.array(v, np.int64) for k, v in
                                              zip(("starts", "ends", "axes", "steps"), (starts, ends, axes, steps))})
    assert ref.shape == ours.shape and np.array_equal(ref, ours)


def test_the_shape_arithmetic_of_tf_same_padding_follows_onnx():
    from onnx import helper, numpy_helper
    shape = np.array([2, 3], np.int64)
    value = numpy_helper.from_array(np.array([1.5], np.float32))
    ref, ours = _run_one_node(helper.make_node("ConstantOfShape", ["shape"], ["y"], value=value), {}, {"shape": shape})
    assert ref.dtype == ours.dtype and np.array_equal(ref, ours)
    x = np.array([[-1.5, 0.2, 2.7]], np.float32)
    for op in ("Ceil", "Floor"):
        ref, ours = _run_one_node(helper.make_node(op, ["x"], ["y"]), {"x": x}, {})
        assert np.array_equal(ref, ours)
    b, c = np.array([[0.0, 1.0, 1.0]], np.float32), np.array([[2.0, -3.0, 0.5]], np.float32)
    for op in ("Max", "Min"):
        ref, ours = _run_one_node(helper.make_node(op, ["x", "b", "c"], ["y"]), {"x": x, "b": b, "c": c}, {})
        assert np.array_equal(ref, ours)


def test_an_op_the_interpreter_lacks_is_one_clear_error():
    from onnx import TensorProto, helper
    node = helper.make_node("Einsum", ["input", "input"], ["logits"], equation="bi,bi->bi")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(g)
    with pytest.raises(UserError, match="does not handle the ONNX op 'Einsum'.*post-training INT8"):
        QDQGraph(model, model)


@pytest.fixture(scope="module")
def qat_run(trained_checkpoint, tmp_path_factory):
    """Two epochs of QAT on the trained student: (its folder, what it printed on stdout, on stderr)."""
    import contextlib
    import io

    from export import QatSettings, quantization_aware_training
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.setenv("VL2LITE_PROGRESS", "1")
        settings = QatSettings(epochs=2, out=tmp_path_factory.mktemp("qat") / "qat", calib_images=64)
        folder = quantization_aware_training(trained_checkpoint, settings)
    return folder, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def qat_folder(qat_run):
    return qat_run[0]


def test_qat_is_never_silent_each_phase_and_epoch_a_line_on_stderr(qat_run):
    folder, stdout, stderr = qat_run
    assert stdout == ""  # the command prints only the folder
    lines = stderr.splitlines()
    assert all(ln.startswith(("qat: ", "qat model.int8", "QAT folder written: ")) for ln in lines), stderr
    for stage in ("qat: pytorch reference", "qat: training images", "qat: FP32 graph and calibration images"):
        assert f"{stage}: started (" in lines[[ln.split(": started")[0] for ln in lines].index(stage)]
    for file in (CPU.file, TENSORRT.file):
        for stage in ("post-training graph", "2 epochs", "post-training vs QAT on test"):
            assert any(ln.startswith(f"qat {file}: {stage}: started (") for ln in lines), (file, stage)
            assert any(ln.startswith(f"qat {file}: {stage}: done, ") for ln in lines), (file, stage)
        for epoch in (1, 2):  # one line per epoch, with its figures
            assert any(ln.startswith(f"qat {file}: 2 epochs: epoch {epoch} (loss ") and "KL to FP32" in ln
                       for ln in lines)
    assert lines[-1].startswith(f"QAT folder written: {folder} (model.int8.onnx: epoch ")


def test_qat_writes_both_flavours_chosen_on_validation(qat_folder, trained_checkpoint):
    from formats.files import sha256_file
    from formats.qat import read_qat_record
    record = read_qat_record(qat_folder, "rerun")  # strict: every key there, none unknown
    assert record.to_dict() == json.loads((qat_folder / "qat.json").read_text())  # and nothing lost on the way
    assert record.schema_version == 2 and record.source_checkpoint.sha256 == sha256_file(trained_checkpoint)
    assert (record.selected_on.split, record.selected_on.images) == ("val+train", 30 + 210)
    assert sorted(p.name for p in qat_folder.iterdir()) == ["model.int8.onnx", "model.int8.trt.onnx", "qat.json"]
    assert [p.name for p in qat_folder.parent.iterdir()] == ["qat"]  # the staging folder became the result
    assert [f.file for f in record.flavours] == [CPU.file, TENSORRT.file]
    for flavour in (CPU, TENSORRT):
        entry = record.flavour(flavour.file)
        assert [r.epoch for r in entry.epochs] == [0, 1, 2] and entry.epochs[1].loss > 0 and entry.epochs[0].loss is None
        chosen = entry.epochs[entry.chosen_epoch]
        assert chosen.kl == min(r.kl for r in entry.epochs)  # the epoch closest to FP32 on val+train
        assert entry.ptq_vs_qat.split == "test" and 0 < entry.ptq_vs_qat.fp32_top1 <= 1
        assert entry.sha256 == sha256_file(qat_folder / flavour.file)
        assert entry.torch_vs_onnxruntime.agreement >= 0.95
        assert ("reference" in entry.torch_vs_onnxruntime.against) == (flavour is TENSORRT)
        assert verify_int8(qat_folder / flavour.file, flavour) == entry.graph


def test_a_qat_record_of_another_version_or_with_a_stray_key_is_refused(qat_folder, trained_checkpoint, tmp_path):
    from export.int8.qat_folder import read_qat  # what export --qat reads before any work
    record = json.loads((qat_folder / "qat.json").read_text())
    for name, change, message in [
            ("old", lambda r: r.pop("schema_version"), "has schema version None, this toolkit reads 2"),
            ("stray", lambda r: r["flavours"][0]["epochs"][0].update(lr=0.1),
             r"flavours\[0\]: epochs\[0\] has an unknown field 'lr'")]:
        folder = tmp_path / name
        shutil.copytree(qat_folder, folder)
        change(record_copy := json.loads(json.dumps(record)))
        (folder / "qat.json").write_text(json.dumps(record_copy))
        with pytest.raises(UserError, match=message):
            read_qat(folder, trained_checkpoint)


def test_the_epoch_is_judged_on_validation_plus_unaugmented_training_images(trained_checkpoint):
    import dataclasses

    from export import QatSettings
    from export.int8.qat import _selections
    from students.checkpoint import load_student
    student, meta = load_student(trained_checkpoint)
    splits, pre = training_splits(meta, None), meta.preprocessing.to_dict()
    select, report = _selections(student, splits, pre, QatSettings(select_train_images=5))
    assert (select.split, select.batches.images, report.split) == ("val+train", 30 + 5, "test")
    first = next(iter(select.batches))[0]  # (B, 3, H, W): the validation images come first, as they are
    assert np.array_equal(first[:4], next(iter(ImageBatches(splits.val, pre, 4)))[0])
    assert _selections(student, splits, pre, QatSettings(select_train_images=0))[0].split == "val"
    no_val = dataclasses.replace(splits, val=SubsetSource(splits.val, []))
    assert _selections(student, no_val, pre, QatSettings(select_train_images=5))[0].split == "train"  # never test
    with pytest.raises(UserError, match="--select-train-images must be >= 0"):
        QatSettings(select_train_images=-1)


def test_export_publishes_the_trained_graphs_without_calibrating(qat_folder, trained_checkpoint, tmp_path,
                                                                  monkeypatch):
    import export.int8.ptq
    from export import ExportOptions, export_bundle

    def no_calibration(*args, **kwargs):
        raise AssertionError("a QAT export must not calibrate")
    monkeypatch.setattr(export.int8.ptq, "calibration_sample", no_calibration)
    monkeypatch.setattr(export.int8.ptq, "quantize", no_calibration)
    out = export_bundle(trained_checkpoint, tmp_path / "b", ExportOptions(backends=("int8",), qat=str(qat_folder),
                                                                          best_effort=True))
    manifest = json.loads((out / "manifest.json").read_text())
    record = json.loads((qat_folder / "qat.json").read_text())
    for flavour in (CPU, TENSORRT):
        entry = next(a for a in manifest["artifacts"] if a["file"] == flavour.file)
        q = entry["quantization"]
        assert q["method"] == "qat" and q["calibration_images"] == 0 and q["excluded_nodes"] == []
        trained = next(f for f in record["flavours"] if f["file"] == flavour.file)
        assert q["qat"]["ptq_vs_qat"] == trained["ptq_vs_qat"] and q["qat"]["selected_on"] == record["selected_on"]
        assert q["graph"]["int8_weighted_ops"] == q["graph"]["weighted_ops"]
        # the same graph on the same test images: export's figure is the one QAT recorded
        assert entry["top1"] == q["qat"]["ptq_vs_qat"]["qat"]["top1"]


def test_export_refuses_qat_graphs_of_another_checkpoint_or_tampered(qat_folder, trained_checkpoint, tmp_path):
    from export import ExportOptions, export_bundle
    with pytest.raises(UserError, match="--qat needs --int8"):
        ExportOptions(qat=str(qat_folder))
    other = tmp_path / "other.pt"
    ckpt = torch.load(trained_checkpoint, weights_only=True)
    ckpt["epoch"] = ckpt.get("epoch", 0) + 1
    torch.save(ckpt, other)
    with pytest.raises(UserError, match="trained from another checkpoint"):
        export_bundle(other, tmp_path / "b1", ExportOptions(backends=("int8",), qat=str(qat_folder)))
    bad = tmp_path / "tampered"
    shutil.copytree(qat_folder, bad)
    (bad / "model.int8.onnx").write_bytes((bad / "model.int8.onnx").read_bytes()[:-10])
    with pytest.raises(UserError, match="model.int8.onnx is missing or does not match qat.json"):
        export_bundle(trained_checkpoint, tmp_path / "b2", ExportOptions(backends=("int8",), qat=str(bad)))
    with pytest.raises(UserError, match="no qat.json there"):
        export_bundle(trained_checkpoint, tmp_path / "b3", ExportOptions(backends=("int8",), qat=str(tmp_path)))
    assert not any((tmp_path / f"b{i}").exists() for i in (1, 2, 3))


def test_qat_cli_refuses_an_existing_folder_before_work(qat_folder, trained_checkpoint):
    cmd = [sys.executable, "-m", "export.qat", str(trained_checkpoint), "--out", str(qat_folder)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "already exists: pass --overwrite" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(cmd[:4] + ["--epochs", "0"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--epochs" in proc.stderr
