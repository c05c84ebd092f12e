"""The ONNX ops ``export.int8.qat_graph.QDQGraph`` runs, in torch, with ONNX's semantics.

``OPS[op_type](graph, node, inputs, attributes)`` -> output tensor (or a tuple, for several outputs);
``graph`` answers ``qrange(zero_point_name)`` for the Q/DQ ops. An op missing here is one clear
error when a graph is loaded (quantization-aware training then does not take that student).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Protocol

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from export.int8.fake_quant import MIN_SCALE, round_ste
from formats.errors import UserError


class QuantRanges(Protocol):
    def qrange(self, zp_name: str) -> tuple[int, int]: ...


Op = Callable[[QuantRanges, onnx.NodeProto, list, dict], Any]


def _quantize(m: QuantRanges, node, a, at) -> torch.Tensor:
    x, s = a[0], a[1].clamp_min(MIN_SCALE)
    zp_name = node.input[2] if len(node.input) > 2 else ""
    z = a[2].float() if len(a) > 2 and a[2] is not None else torch.zeros(())
    qmin, qmax = m.qrange(zp_name)
    return torch.clamp(round_ste(x / s) + z, qmin, qmax)  # integer-valued float tensor


def _dequantize(m: QuantRanges, node, a, at) -> torch.Tensor:
    q, s = a[0], a[1].clamp_min(MIN_SCALE)
    z = a[2].float() if len(a) > 2 and a[2] is not None else torch.zeros(())
    return (q.float() - z) * s


def _pads(at: dict, dims: int) -> tuple[list[int], list[int] | None]:
    """ONNX pads (begin..., end...) -> torch's symmetric padding, or an explicit F.pad list."""
    if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise UserError(f"quantization-aware training: auto_pad {at['auto_pad']!r} is not handled")
    pads = list(at.get("pads", [0] * 2 * dims))
    begin, end = pads[:dims], pads[dims:]
    if begin == end:
        return begin, None
    explicit = []
    for b, e in zip(reversed(begin), reversed(end)):
        explicit += [b, e]
    return [0] * dims, explicit


def _conv(m, node, a, at):
    x, w, b = a[0], a[1], a[2] if len(a) > 2 else None
    dims = w.ndim - 2
    pad, explicit = _pads(at, dims)
    if explicit:
        x = F.pad(x, explicit)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    return conv(x, w, b, stride=at.get("strides", [1] * dims), padding=pad,
                dilation=at.get("dilations", [1] * dims), groups=at.get("group", 1))


def _gemm(m, node, a, at):
    x, w = a[0], a[1]
    x = x.t() if at.get("transA", 0) else x
    w = w.t() if at.get("transB", 0) else w
    y = at.get("alpha", 1.0) * (x @ w)
    return y + at.get("beta", 1.0) * a[2] if len(a) > 2 and a[2] is not None else y


def _pool(kind: str) -> Op:
    def pool(m, node, a, at):
        x, k = a[0], at["kernel_shape"]
        pad, explicit = _pads(at, len(k))
        if explicit:
            x = F.pad(x, explicit, value=float("-inf") if kind == "max" else 0.0)
        stride, ceil = at.get("strides", [1] * len(k)), bool(at.get("ceil_mode", 0))
        if kind == "max":
            return F.max_pool2d(x, k, stride, pad, at.get("dilations", [1] * len(k)), ceil_mode=ceil)
        return F.avg_pool2d(x, k, stride, pad, ceil_mode=ceil, count_include_pad=bool(at.get("count_include_pad", 0)))
    return pool


def _reshape(m, node, a, at):
    x, shape = a[0], _ints(a[1])
    shape = [x.shape[i] if v == 0 and not at.get("allowzero", 0) else v for i, v in enumerate(shape)]
    return x.reshape(shape)


def _reduce_mean(m, node, a, at):
    axes = at.get("axes") or (a[1].tolist() if len(a) > 1 and a[1] is not None else None)
    keep = bool(at.get("keepdims", 1))
    return a[0].mean(dim=axes, keepdim=keep) if axes else a[0].mean()


def _clip(m, node, a, at):
    lo = a[1] if len(a) > 1 and a[1] is not None else at.get("min")
    hi = a[2] if len(a) > 2 and a[2] is not None else at.get("max")
    return torch.clamp(a[0], lo, hi)


def _layer_norm(m, node, a, at):
    axis = at.get("axis", -1) % a[0].ndim
    return F.layer_norm(a[0], a[0].shape[axis:], a[1], a[2] if len(a) > 2 else None, at.get("epsilon", 1e-5))


def _flatten(m, node, a, at):
    axis = at.get("axis", 1)
    return a[0].reshape(int(np.prod(a[0].shape[:axis])), -1)


def _ints(t: torch.Tensor | None) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _slice(m, node, a, at):
    x = a[0]
    starts, ends = _ints(a[1]), _ints(a[2])
    axes = _ints(a[3]) if len(a) > 3 and a[3] is not None else list(range(len(starts)))
    steps = _ints(a[4]) if len(a) > 4 and a[4] is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step == 0:
            raise UserError(f"Q/DQ graph: Slice with step 0 (node {node.name}) is not valid ONNX")
        dim = x.shape[axis]
        start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
        if step > 0:  # ONNX clamps starts and ends to [0, dim] going forward...
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:  # ...and to [0, dim - 1] and [-1, dim - 1] going backward (e.g. reversing the pads of F.pad)
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        x = x.index_select(axis, torch.arange(start, end, step, dtype=torch.int64))
    return x


def _split(m, node, a, at):
    axis = at.get("axis", 0)
    sizes = _ints(a[1]) if len(a) > 1 and a[1] is not None else at.get("split")
    if not sizes:
        n = len(node.output)
        sizes = [a[0].shape[axis] // n] * n
    return tuple(torch.split(a[0], list(sizes), dim=axis))


def _unsqueeze(m, node, a, at):
    axes = _ints(a[1]) if len(a) > 1 else list(at["axes"])
    x = a[0]
    for axis in sorted(v % (x.ndim + len(axes)) for v in axes):
        x = x.unsqueeze(axis)
    return x


def _squeeze(m, node, a, at):
    axes = _ints(a[1]) if len(a) > 1 and a[1] is not None else list(at.get("axes", []))
    x = a[0]
    return x.squeeze() if not axes else x.squeeze(tuple(v % x.ndim for v in axes))


CASTS = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.INT64: torch.int64,
         onnx.TensorProto.INT32: torch.int32, onnx.TensorProto.BOOL: torch.bool}


def _pad(m, node, a, at):
    mode = at.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = _ints(a[1]) if len(a) > 1 and a[1] is not None else list(at.get("pads", []))
    axes = _ints(a[3]) if len(a) > 3 and a[3] is not None else list(range(a[0].ndim))
    begin, end = pads[:len(axes)], pads[len(axes):]
    full = [0] * (2 * a[0].ndim)  # torch order: last dim first, (begin, end) each
    for axis, b, e in zip(axes, begin, end):
        k = a[0].ndim - 1 - axis % a[0].ndim
        full[2 * k], full[2 * k + 1] = b, e
    value = float(a[2].detach().reshape(-1)[0]) if mode == "constant" and len(a) > 2 and a[2] is not None else 0.0
    return F.pad(a[0], full, mode=mode, value=value) if mode == "constant" else F.pad(a[0], full, mode=mode)


def _gather(m, node, a, at):
    x, idx = a[0], a[1]
    axis = at.get("axis", 0) % x.ndim
    picked = torch.index_select(x, axis, idx.reshape(-1) % x.shape[axis])
    return picked.reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])


def _cast(m, node, a, at):
    if at["to"] not in CASTS:
        raise UserError(f"quantization-aware training: Cast to type {at['to']} (node {node.name}) is not handled")
    return a[0].to(CASTS[at["to"]])


def _constant_of_shape(m, node, a, at):
    value = numpy_helper.to_array(at["value"]) if "value" in at else np.zeros(1, np.float32)  # ONNX default: 0.0
    fill = torch.from_numpy(value.reshape(-1)[:1].copy())  # (1,), the value and its dtype
    return fill.expand(_ints(a[0])).clone()


def _hard_sigmoid(x: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    return torch.clamp(alpha * x + beta, 0.0, 1.0)


OPS: dict[str, Op] = {
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda m, n, a, at: torch.matmul(a[0], a[1]),
    "Add": lambda m, n, a, at: a[0] + a[1],
    "Sub": lambda m, n, a, at: a[0] - a[1],
    "Mul": lambda m, n, a, at: a[0] * a[1],
    "Div": lambda m, n, a, at: torch.div(a[0], a[1], rounding_mode="trunc") if not a[0].is_floating_point()
    else a[0] / a[1],  # integer tensors (shapes) divide as integers in ONNX
    "Pow": lambda m, n, a, at: torch.pow(a[0], a[1]),
    "Relu": lambda m, n, a, at: F.relu(a[0]),
    "Sigmoid": lambda m, n, a, at: torch.sigmoid(a[0]),
    "Tanh": lambda m, n, a, at: torch.tanh(a[0]),
    "Erf": lambda m, n, a, at: torch.erf(a[0]),
    "Sqrt": lambda m, n, a, at: torch.sqrt(a[0]),
    "Exp": lambda m, n, a, at: torch.exp(a[0]),
    "Neg": lambda m, n, a, at: -a[0],
    "HardSigmoid": lambda m, n, a, at: _hard_sigmoid(a[0], at.get("alpha", 0.2), at.get("beta", 0.5)),
    "HardSwish": lambda m, n, a, at: a[0] * _hard_sigmoid(a[0], 1.0 / 6.0, 0.5),
    "Clip": _clip,
    "Softmax": lambda m, n, a, at: torch.softmax(a[0], dim=at.get("axis", -1)),
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda m, n, a, at: a[0].mean(dim=tuple(range(2, a[0].ndim)), keepdim=True),
    "ReduceMean": _reduce_mean,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": lambda m, n, a, at: a[0].permute(*at["perm"]),
    "Concat": lambda m, n, a, at: torch.cat(list(a), dim=at["axis"]),
    "LayerNormalization": _layer_norm,
    "Shape": lambda m, n, a, at: torch.tensor(a[0].shape[at.get("start", 0):at.get("end")], dtype=torch.int64),
    "Gather": _gather,
    "Pad": _pad,
    "Slice": _slice,
    "Split": _split,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Cast": _cast,
    "Expand": lambda m, n, a, at: a[0] * torch.ones(_ints(a[1]), dtype=a[0].dtype),
    "Identity": lambda m, n, a, at: a[0],
    # shape arithmetic (TF "same" padding computes its pads from the input size)
    "Ceil": lambda m, n, a, at: torch.ceil(a[0]),
    "Floor": lambda m, n, a, at: torch.floor(a[0]),
    "Max": lambda m, n, a, at: functools.reduce(torch.maximum, a),
    "Min": lambda m, n, a, at: functools.reduce(torch.minimum, a),
    "ConstantOfShape": _constant_of_shape,
    "Dropout": lambda m, n, a, at: a[0],
}
