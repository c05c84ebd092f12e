"""Portable numbers: the CPU INT8 graph cannot saturate on any x86 CPU, and every figure says where it was measured."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.int8.flavours import CPU, TENSORRT
from export.int8.safety import INT16_MAX, u8s8_saturation, worst_pair_sum
from formats.isa import UNKNOWN, isa_class, provenance_note, this_cpu
from formats.records import plain

pytestmark = pytest.mark.cpu_kernels


@pytest.mark.parametrize("machine,flags,expected", [
    ("x86_64", {"avx2", "avx512bw", "avx512_vnni", "amx_int8"}, "x86-amx"),
    ("x86_64", {"avx2", "avx512bw", "avx512_vnni"}, "x86-avx512-vnni"),
    ("x86_64", {"avx2", "avx_vnni"}, "x86-avx-vnni"),
    ("x86_64", {"avx2", "avx512bw"}, "x86-avx512"),
    ("x86_64", {"avx2", "fma"}, "x86-avx2"),  # AMD EPYC Rome, Intel Haswell
    ("AMD64", {"sse4_1"}, "x86-sse"),
    ("aarch64", {"asimd", "asimddp", "i8mm"}, "arm64-i8mm"),
    ("aarch64", {"asimd", "asimddp"}, "arm64-dotprod"),  # Jetson Orin's Cortex-A78AE
    ("aarch64", {"asimd"}, "arm64-neon"),  # Raspberry Pi 4's Cortex-A72
    ("riscv64", set(), "riscv64"),
])
def test_the_isa_class_follows_the_integer_kernels(machine, flags, expected):
    assert isa_class(machine, flags) == expected


def test_numpy_feature_names_give_the_same_classes():
    assert isa_class("x86_64", set(), {"AVX2", "AVX512BW", "AVX512VNNI"}) == "x86-avx512-vnni"
    assert isa_class("x86_64", set(), {"AVX2"}) == "x86-avx2"
    assert isa_class("arm64", set(), {"ASIMD", "ASIMDDP"}) == "arm64-dotprod"


def test_this_cpu_is_read():
    here = this_cpu()
    assert set(here) == {"isa", "cpu", "machine"} and here["isa"] != UNKNOWN and here["cpu"]


def test_the_runtime_says_when_the_device_is_not_where_accuracy_was_measured():
    vnni = {"isa": "x86-avx512-vnni", "cpu": "Intel Xeon", "machine": "x86_64", "engine": "onnxruntime 1.32.0"}
    avx2 = {"isa": "x86-avx2", "cpu": "AMD EPYC 7B12", "machine": "x86_64"}
    assert provenance_note("model.int8.onnx", vnni, dict(vnni)) is None
    note = provenance_note("model.int8.onnx", vnni, avx2)
    assert "x86-avx512-vnni (Intel Xeon; onnxruntime 1.32.0)" in note and "x86-avx2 (AMD EPYC 7B12)" in note
    assert "runtime.bench" in note and "--data" in note
    assert "measured on: unknown" in provenance_note("model.int8.onnx", None, avx2)  # an older bundle
    assert "could not be read" in provenance_note("model.int8.onnx", vnni, {"isa": UNKNOWN, "cpu": "?", "machine": "?"})


def test_the_worst_pair_is_the_two_largest_weights_of_one_output_channel():
    w = np.array([[64, -64, 3], [127, 1, -1]], np.int8)  # (N=2, K=3): output channels along axis 0
    assert worst_pair_sum(w, 0) == 128  # channel 1: 127 + 1
    assert worst_pair_sum(w.T, 1) == 128  # the same weights as (K, N)
    assert worst_pair_sum(np.array([[-127], [5]], np.int8), 0) == 127  # one weight per channel: no pair


def _u8s8_matmul(weights: np.ndarray) -> onnx.ModelProto:
    """x (1, K) float -> Q/DQ uint8 -> MatMul with INT8 weights (K, N) behind DequantizeLinear -> (1, N)."""
    k, n = weights.shape
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    inits = [numpy_helper.from_array(np.array(1.0, np.float32), "xs"), numpy_helper.from_array(np.array(0, np.uint8), "xz"),
             numpy_helper.from_array(weights.astype(np.int8), "wq"), numpy_helper.from_array(np.array(1.0, np.float32), "ws")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("qmax,safe", [(64, True), (127, False)], ids=["7-bit", "8-bit"])
def test_the_static_check_names_graphs_that_can_saturate(qmax, safe, tmp_path):
    w = np.full((16, 4), qmax, np.int8)
    onnx.save(_u8s8_matmul(w), str(tmp_path / "m.onnx"))
    report = u8s8_saturation(tmp_path / "m.onnx")
    assert report.u8s8_ops == 1 and report.worst_pair_sum == 255 * 2 * qmax
    assert report.safe_on_every_x86 is safe and report.ops_over_limit == (0 if safe else 1)
    assert report.limit == INT16_MAX


def test_a_7bit_u8s8_graph_computes_the_exact_integer_sum_on_this_cpu(tmp_path):
    """The worst case for VPMADDUBSW (every activation 255, every weight at the grid's edge) through
    onnxruntime's fused integer kernels: with 7-bit weights exact on any x86 CPU (and so on this one)."""
    import onnxruntime as ort
    w = np.where(np.arange(64)[:, None] % 2 == 0, 64, 63).repeat(8, axis=1).astype(np.int8)  # (K=64, N=8)
    onnx.save(_u8s8_matmul(w), str(tmp_path / "m.onnx"))
    x = np.full((1, 64), 255.0, np.float32)
    y = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.array_equal(y, x @ w.astype(np.float32))  # 255 * (32 * 64 + 32 * 63) per output, exactly


def test_the_exported_cpu_graph_has_7bit_weights_and_every_figure_its_provenance(exported_bundle):
    manifest = json.loads((exported_bundle / "manifest.json").read_text())
    here = this_cpu()
    for art in manifest["artifacts"]:
        where = art["measured_on"]
        assert {k: where[k] for k in ("isa", "cpu", "machine")} == here, art["file"]
        assert where["engine"].startswith("onnxruntime ")
    cpu = next(a for a in manifest["artifacts"] if a["file"] == CPU.file)
    assert cpu["quantization"]["weight_range"] == [-64, 64]
    assert cpu["quantization"]["graph"]["saturation"] == plain(u8s8_saturation(exported_bundle / CPU.file))
    assert cpu["quantization"]["graph"]["saturation"]["safe_on_every_x86"]
    kept_float = len(cpu["quantization"]["excluded_nodes"])
    assert cpu["quantization"]["graph"]["saturation"]["u8s8_ops"] == cpu["quantization"]["graph"]["weighted_ops"] - kept_float
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(exported_bundle / CPU.file)).graph.initializer
               if t.data_type == TensorProto.INT8]
    assert max(int(np.abs(w.astype(np.int64)).max()) for w in weights) == 64  # the grid's edge is used, never passed
    trt = next(a for a in manifest["artifacts"] if a["file"] == TENSORRT.file)
    assert trt["quantization"]["weight_range"] == [-127, 127]  # TensorRT's GPU kernels sum in int32: full 8 bits
    assert "optimisations off" in trt["measured_on"]["engine"]


def test_a_forced_torch_kernel_level_is_really_in_force():
    """make test runs these tests again with ATEN_CPU_CAPABILITY=avx2: that pass must run the AVX2 kernels."""
    import os

    import torch
    forced = os.environ.get("ATEN_CPU_CAPABILITY")
    if not forced:
        pytest.skip("torch runs its default kernels in this pass (make test's second pass forces avx2)")
    assert torch.backends.cpu.get_cpu_capability().lower() == forced.lower()


EMULATED = """
import json, sys
import numpy as np, onnxruntime as ort
from formats.isa import this_cpu
x = np.load(sys.argv[1])
for path in sys.argv[2:]:
    feed = {"input": x} if "worst" not in path else {"x": np.full((1, 64), 255.0, np.float32)}
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    np.save(path + ".avx2.npy", s.run(None, feed)[0])
print(json.dumps(this_cpu()))
"""


def _avx2_emulation() -> str:
    """benchmarks/avx2_emulated.sh where it can run (an x86-64 host with QEMU user mode), else a skip."""
    import platform
    import shutil
    if platform.machine() not in ("x86_64", "AMD64") or shutil.which("qemu-x86_64") is None:
        pytest.skip("no QEMU user mode on an x86-64 host (apt-get install qemu-user): the AVX2-only run is skipped")
    return str(Path(__file__).resolve().parents[1] / "benchmarks" / "avx2_emulated.sh")


def test_the_exported_cpu_graph_computes_the_same_logits_on_an_avx2_only_cpu(exported_bundle, tmp_path):
    """The bundle's INT8 graph run where onnxruntime sees an AVX2-only CPU (QEMU presenting an AMD EPYC
    Rome: no AVX-512, no VNNI) gives this CPU's logits; an 8-bit worst case run there saturates, which
    shows that the emulated run really took the int16 pair-sum kernels."""
    import shutil
    import subprocess
    import sys

    import onnxruntime as ort
    wrapper = _avx2_emulation()
    shutil.copyfile(exported_bundle / CPU.file, tmp_path / "model.onnx")
    onnx.save(_u8s8_matmul(np.full((64, 8), 127, np.int8)), str(tmp_path / "worst8.onnx"))
    x = np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype(np.float32)  # (B, 3, H, W)
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([wrapper, sys.executable, "-c", EMULATED, str(tmp_path / "x.npy"),
                           str(tmp_path / "model.onnx"), str(tmp_path / "worst8.onnx")],
                          capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["isa"] == "x86-avx2"
    saturated = np.load(tmp_path / "worst8.onnx.avx2.npy")
    assert saturated.max() < 255 * 127 * 64 * 0.9  # the 8-bit control: int16 pair sums saturated there
    here = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    there = np.load(tmp_path / "model.onnx.avx2.npy")
    assert (here.argmax(1) == there.argmax(1)).all()
    assert np.abs(here - there).max() <= 1e-3 * np.abs(here).max()  # integer sums agree; float rounding at most
