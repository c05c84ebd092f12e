"""A static check that no U8S8 convolution or matrix product of a Q/DQ graph can saturate on any x86 CPU.

On x86 without VNNI (AVX2, AVX-512 without VNNI) onnxruntime runs uint8-activation × int8-weight
products on VPMADDUBSW, which adds two adjacent u8·s8 products into a saturating int16 before
widening (onnxruntime's quantization docs; oneDNN's "nuances of int8 computations")::

    |a_1 w_1 + a_2 w_2| <= 255 · (|w_1| + |w_2|) <= 32,767

Which two weights land in one pair depends on the kernel's packing, so the check is taken over
the worst pair of each output channel: the two largest |w| of the channel. With 7-bit weights
(|w| <= 64) the bound is 255 · 128 = 32,640 and no input can saturate; with 8-bit weights a
channel's largest weight is ±127 by construction (per-channel scales), so almost every channel can.

Operands that are both activations (attention's q·kᵀ) are U8U8, which those kernels widen to int16
before multiplying: they cannot saturate and are not counted.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from export.int8.graph import weighted_nodes
from formats.quantization import Saturation

INT16_MAX = 32767
U8_MAX = 255


def worst_pair_sum(q: np.ndarray, output_axis: int) -> int:
    """max over output channels of the two largest |q| along the channel's reduction; q: int tensor."""
    a = np.abs(np.moveaxis(q.astype(np.int64), output_axis, 0).reshape(q.shape[output_axis], -1))  # (N, K)
    if a.shape[1] < 2:
        return int(a.max(initial=0))
    top2 = -np.partition(-a, 1, axis=1)[:, :2]  # (N, 2): the two largest per channel
    return int(top2.sum(axis=1).max(initial=0))


def _output_axis(node: onnx.NodeProto, ndim: int) -> int:
    """Which axis of the weight indexes output channels: Conv (M, C/g, kh, kw) -> 0; MatMul (.., K, N)
    -> last; Gemm B (K, N) -> 1, or (N, K) with transB -> 0."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return ndim - 1


def u8s8_saturation(path: Path) -> Saturation:
    """The worst int16 pair sum over every U8S8 weighted op of the graph at ``path``;
    ``worst_pair_sum`` is 255 · (the two largest |weight| of the worst channel)."""
    g = onnx.load(str(path)).graph
    inits = {t.name: t for t in g.initializer}
    dq = {n.output[0]: n for n in g.node if n.op_type == "DequantizeLinear"}
    ops, worst, over = 0, 0, []
    for node in weighted_nodes(g):
        w_dq, x_dq = dq.get(node.input[1]), dq.get(node.input[0])
        if w_dq is None or x_dq is None or len(x_dq.input) < 3:
            continue  # a float weight or a float input: no integer kernel
        w, zp = inits.get(w_dq.input[0]), inits.get(x_dq.input[2])
        if w is None or zp is None or w.data_type != onnx.TensorProto.INT8 or zp.data_type != onnx.TensorProto.UINT8:
            continue  # not U8S8
        q = numpy_helper.to_array(w)
        pair = U8_MAX * worst_pair_sum(q, _output_axis(node, q.ndim))
        ops, worst = ops + 1, max(worst, pair)
        if pair > INT16_MAX:
            over.append(node.name or node.output[0])
    return Saturation(u8s8_ops=ops, worst_pair_sum=worst, limit=INT16_MAX, ops_over_limit=len(over),
                      first_over_limit=tuple(over[:5]), safe_on_every_x86=not over)
