"""Does onnxruntime's U8S8 integer kernel saturate on this CPU? 8-bit vs 7-bit weights, by hand-built QDQ graphs.

    python benchmarks/isa_saturation.py [--check] [--k 144]
    benchmarks/avx2_emulated.sh .venv/bin/python benchmarks/isa_saturation.py --check   # as an AVX2-only CPU

MLAS picks its uint8 x int8 GEMM kernel by CPUID. With AVX-512 VNNI / AVX-VNNI / AMX the products
accumulate exactly in int32 (VPDPBUSD). On AVX2 (or SSE4.1, or AVX-512 without VNNI) the kernel uses
VPMADDUBSW, which adds two adjacent u8*s8 products into a *saturating int16*: 255*127*2 = 64770 >
32767, so a graph with full 8-bit weights can give different outputs there. With 7-bit weights
(|w| <= 64: 255*64*2 = 32640) the pair sum cannot saturate.

Each graph is float input -> QuantizeLinear(uint8, zero point 0) -> DequantizeLinear -> MatMul or
Conv with an INT8 initializer weight behind DequantizeLinear (per output channel) ->
QuantizeLinear(uint8) -> DequantizeLinear, run with ORT_ENABLE_ALL on CPUExecutionProvider, so
onnxruntime fuses it into QLinearMatMul / QLinearConv (the fused op types are printed). Cases:
"worst" (all activations 255, all weights at the maximum, every adjacent pair saturates) and
"random" (random uint8 activations and weights in the full range). The reference is exact: the
int32 accumulator computed in numpy (int64), scaled and requantized with the same output scale.
A deviation is counted in output quantization steps (1 step = float rounding of the requantization).

Prints a table and exits 0. With --check: exits 1 if any 7-bit graph is more than one output step
away from the exact reference (the 8-bit deviations are reported, not judged: they are the
expected behaviour of an AVX2-only CPU). numpy + onnx + onnxruntime only.
"""
from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import platform
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
SEED = 0


# ---------------------------------------------------------------- CPU features (what MLAS sees)

def _cpuid_features() -> dict:
    """CPUID + XGETBV executed in this process (under qemu-user: the emulated CPU's answers)."""
    code = bytes([0x53, 0x49, 0x89, 0xD0, 0x89, 0xF8, 0x89, 0xF1, 0x0F, 0xA2,  # push rbx; mov r8,rdx; eax=edi; ecx=esi; cpuid
                  0x41, 0x89, 0x00, 0x41, 0x89, 0x58, 0x04, 0x41, 0x89, 0x48, 0x08,  # store eax, ebx, ecx
                  0x41, 0x89, 0x50, 0x0C, 0x5B, 0xC3])  # store edx; pop rbx; ret
    xgetbv = bytes([0x31, 0xC9, 0x0F, 0x01, 0xD0, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0, 0xC3])
    buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    buf.seek(64)
    buf.write(xgetbv)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p)(addr)
    xg = ctypes.CFUNCTYPE(ctypes.c_uint64)(addr + 64)

    def cpuid(leaf, sub=0):
        out = (ctypes.c_uint32 * 4)()
        fn(leaf, sub, ctypes.addressof(out))
        return tuple(out)

    def bit(r, b):
        return bool((r >> b) & 1)

    _, b0, c0, d0 = cpuid(0)
    vendor = b"".join(x.to_bytes(4, "little") for x in (b0, d0, c0)).decode(errors="replace")
    _, _, c1, _ = cpuid(1)
    _, b7, c7, d7 = cpuid(7, 0)
    a71, _, _, _ = cpuid(7, 1)
    feats = {"vendor": vendor, "AVX2": bit(b7, 5), "FMA": bit(c1, 12), "AVX512F": bit(b7, 16),
             "AVX512BW": bit(b7, 30), "AVX512_VNNI": bit(c7, 11), "AVX_VNNI": bit(a71, 4),
             "AMX_INT8": bit(d7, 25)}
    feats["XCR0"] = hex(xg()) if bit(c1, 27) else "n/a"
    del fn, xg
    return feats


def cpu_features() -> dict:
    if platform.machine().lower() in ("x86_64", "amd64"):
        try:
            return _cpuid_features()
        except Exception as exc:  # noqa: BLE001 - best effort, fall back to numpy's view
            print(f"(cpuid probe failed: {exc}; using numpy's feature table)", file=sys.stderr)
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as f
    except ImportError:
        from numpy.core._multiarray_umath import __cpu_features__ as f
    return {k: f.get(k) for k in ("AVX2", "FMA3", "AVX512F", "AVX512BW", "AVX512VNNI")}


def expect_exact(feats: dict) -> bool:
    """True where MLAS has an exact (int32-accumulating) U8S8 kernel: VNNI or AMX."""
    return bool(feats.get("AVX512_VNNI") or feats.get("AVX_VNNI") or feats.get("AMX_INT8")
                or feats.get("AVX512VNNI")) or platform.machine().lower() not in ("x86_64", "amd64")


# ---------------------------------------------------------------- graphs

def _scalar(name, value, dtype):
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def build(kind: str, w_q: np.ndarray, s_x: float, s_w: np.ndarray, s_y: float, zp_y: int,
          in_shape: tuple, out_shape: tuple) -> bytes:
    """x(float) -Q/DQ(u8, zp 0)- MatMul|Conv(DQ(int8 W, per channel)) -Q/DQ(u8, zp_y)- y(float)."""
    inits = [
        _scalar("x_scale", s_x, np.float32), _scalar("x_zp", 0, np.uint8),
        numpy_helper.from_array(w_q.astype(np.int8), "w_q"),
        numpy_helper.from_array(s_w.astype(np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(s_w.shape, np.int8), "w_zp"),
        _scalar("y_scale", s_y, np.float32), _scalar("y_zp", zp_y, np.uint8),
    ]
    w_axis = 1 if kind == "matmul" else 0  # output-channel axis: MatMul B is (K, N), Conv W is (M, C, kh, kw)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], axis=w_axis),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["y_f"]) if kind == "matmul"
        else helper.make_node("Conv", ["x_dq", "w_dq"], ["y_f"], kernel_shape=list(w_q.shape[2:])),
        helper.make_node("QuantizeLinear", ["y_f", "y_scale", "y_zp"], ["y_q"]),
        helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zp"], ["y"]),
    ]
    graph = helper.make_graph(nodes, f"{kind}_saturation",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def run_ort(model: bytes, x: np.ndarray, tmp: str) -> tuple[np.ndarray, list[str]]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 1
    so.log_severity_level = 3  # no "serializing an NCHWc-optimized model" warning
    so.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": x})[0]
    ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    return y, ops


def make_case(kind: str, bits: int, case: str, k: int, rng: np.random.Generator):
    """Returns (model bytes, float input, exact reference output, output scale)."""
    wmax = 127 if bits == 8 else 64
    s_x = 1.0 / 255.0
    if kind == "matmul":
        n = 16
        x_q = (np.full((1, k), 255) if case == "worst" else rng.integers(0, 256, (1, k))).astype(np.int64)
        w_q = (np.full((k, n), wmax) if case == "worst" else rng.integers(-wmax, wmax + 1, (k, n))).astype(np.int64)
        acc = x_q @ w_q  # exact int32 accumulator, (1, n)
        in_shape, out_shape, n_out = (1, k), (1, n), n
    else:
        c = max(1, k // 9)  # 3x3 kernel: K = 9 * C
        m, hw = 8, 4
        x_q = (np.full((1, c, hw, hw), 255) if case == "worst" else rng.integers(0, 256, (1, c, hw, hw))).astype(np.int64)
        w_q = (np.full((m, c, 3, 3), wmax) if case == "worst" else rng.integers(-wmax, wmax + 1, (m, c, 3, 3))).astype(np.int64)
        o = hw - 2
        cols = np.stack([x_q[0, :, i:i + 3, j:j + 3].reshape(-1) for i in range(o) for j in range(o)])  # (o*o, 9C)
        acc = (cols @ w_q.reshape(m, -1).T).T.reshape(1, m, o, o)
        in_shape, out_shape, n_out = x_q.shape, (1, m, o, o), m
    # per-channel weight scales (powers of two, so every product is exact in float32)
    s_w = np.full(n_out, 2.0 ** -7, np.float32)
    # output scale: the exact result spans about 200 steps (positive, zero point 0) in the worst case,
    # +-100 steps around zero point 128 in the random case
    if case == "worst":
        zp_y = 0
        s_y = float(np.float32(np.abs(acc).max() * s_x * 2.0 ** -7 / 200.0))
    else:
        zp_y = 128
        s_y = float(np.float32(np.abs(acc).max() * s_x * 2.0 ** -7 / 100.0))
    x = (x_q * np.float32(s_x)).astype(np.float32)  # quantizes back to x_q exactly
    y_exact = acc.astype(np.float64) * s_x * 2.0 ** -7  # float of the exact int32 accumulator
    y_ref_q = np.clip(np.round(y_exact / s_y) + zp_y, 0, 255)
    y_ref = ((y_ref_q - zp_y) * s_y).astype(np.float32)
    model = build(kind, w_q, s_x, s_w, s_y, zp_y, in_shape, out_shape)
    return model, x, y_ref, s_y


def bench(n: int) -> None:
    rng = np.random.default_rng(SEED)
    c, m, hw = 32, 32, 56
    w_q = rng.integers(-127, 128, (m, c, 3, 3))
    model = build("conv", w_q, 1 / 255, np.full(m, 2.0 ** -7, np.float32), 0.05, 128, (1, c, hw, hw), (1, m, hw - 2, hw - 2))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 1
    t0 = time.perf_counter()
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    t_sess = time.perf_counter() - t0
    x = rng.random((1, c, hw, hw), dtype=np.float32)
    sess.run(None, {"x": x})
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        sess.run(None, {"x": x})
        times.append(time.perf_counter() - t0)
    print(f"bench: QDQ Conv 1x{c}x{hw}x{hw} -> {m}ch 3x3, 1 thread: session {t_sess * 1e3:.1f} ms, "
          f"run median {np.median(times) * 1e3:.2f} ms over {n}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a 7-bit graph is > 1 output step off the exact reference")
    ap.add_argument("--k", type=int, default=144, help="reduction length (Conv: 9 * channels)")
    ap.add_argument("--bench", type=int, default=0, metavar="N",
                    help="also time N runs of a 1x32x56x56 -> 32ch 3x3 QDQ Conv (1 thread) and print the median")
    args = ap.parse_args(argv)

    feats = cpu_features()
    exact_expected = expect_exact(feats)
    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}, onnx {onnx.__version__}, {platform.machine()}")
    print("CPU features seen by this process: " + ", ".join(f"{k}={v}" for k, v in feats.items()))
    print("expected U8S8 kernel: " + ("exact int32 (VNNI/AMX)" if exact_expected
                                      else "VPMADDUBSW (int16 pair saturation: 8-bit weights may deviate)"))
    print()
    hdr = f"{'graph':<7} {'bits':>4} {'case':<7} {'fused ops (+Q/DQ)':<22} {'max dev (steps)':>15} {'n off':>6}  {'ort[0]':>9} {'exact[0]':>9}"
    print(hdr)
    print("-" * len(hdr))
    rng = np.random.default_rng(SEED)
    worst7 = 0.0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("matmul", "conv"):
            for bits in (8, 7):
                for case in ("worst", "random"):
                    model, x, y_ref, s_y = make_case(kind, bits, case, args.k, rng)
                    y, ops = run_ort(model, x, tmp)
                    dev = np.abs(y.astype(np.float64) - y_ref) / s_y
                    maxdev, noff = float(dev.max()), int((dev > 1.01).sum())
                    fused = ",".join(o for o in dict.fromkeys(ops) if o not in ("QuantizeLinear", "DequantizeLinear"))
                    rows.append((kind, bits, case, maxdev))
                    if bits == 7:
                        worst7 = max(worst7, maxdev)
                    print(f"{kind:<7} {bits:>4} {case:<7} {fused:<22} {maxdev:>15.1f} {noff:>6}  "
                          f"{y.reshape(-1)[0]:>9.4f} {y_ref.reshape(-1)[0]:>9.4f}")
    print()
    dev8 = max(d for _, b, _, d in rows if b == 8)
    print(f"8-bit weights: max deviation {dev8:.1f} output steps; 7-bit weights: {worst7:.1f} (budget 1 step)")
    if args.bench:
        bench(args.bench)
    if args.check and worst7 > 1.01:
        print("FAIL: a 7-bit-weight graph differs from the exact reference by more than one output step",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
