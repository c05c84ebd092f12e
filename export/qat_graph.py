"""A Q/DQ ONNX graph as a trainable torch module: the INT8 graph onnxruntime runs, with fake quantization.

Quantization-aware training (``export.qat``) trains the deployed graph itself. onnxruntime's
quantizer places the QuantizeLinear/DequantizeLinear pairs exactly as for post-training INT8
(which tensors are INT8, which ops fuse into integer kernels); ``QDQGraph`` runs that graph in
torch with

- every activation Q -> DQ pair as a fake quantizer with a trainable scale (zero point fixed)::

      q = clamp(round(x / s) + z, qmin, qmax)      round with a straight-through gradient
      x_hat = (q - z) * s                           qmin, qmax: the zero point's type (uint8 or int8)

- every INT8 weight replaced by a trainable float weight, quantized per output channel at every
  step the way ``write_back`` will store it: ``s_c = max|w_c| / Q``, ``q = clamp(round(w / s_c), -Q, Q)``,
  with ``Q`` the flavour's grid (127 for TensorRT's S8S8, 64 for the CPU's 7-bit U8S8 weights, which
  no x86 CPU's int16 pair sums can saturate: ``export.int8_safety``);
- every quantized (INT32) bias as a trainable float bias, rounded at every step (straight-through, within
  INT32) onto the grid ``s_x * s_w`` on which onnxruntime adds it.

``write_back`` turns the trained values into the same graph again (INT8 weights, INT32 biases,
new scales): nothing is calibrated at export, and onnxruntime runs what was trained.
"""
from __future__ import annotations

import copy
import functools
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from formats.errors import UserError

WEIGHT_QMAX = 127  # symmetric INT8 weights: [-127, 127] (TensorRT and onnxruntime both accept it), unless told
INT32_MAX = float(np.iinfo(np.int32).max)  # INT32 biases stay within [-INT32_MAX, INT32_MAX]
MIN_SCALE = 1e-12
INT_RANGES = {onnx.TensorProto.UINT8: (0, 255), onnx.TensorProto.INT8: (-128, 127)}


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity gradient (the straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def weight_scale(w: torch.Tensor, axis: int | None, qmax: int = WEIGHT_QMAX) -> torch.Tensor:
    """Symmetric scale of ``w`` onto [-qmax, qmax]: per channel along ``axis`` (shape (C,)), or one scalar."""
    a = w.detach().abs()
    amax = a.max() if axis is None else a.transpose(0, axis).reshape(w.shape[axis], -1).max(dim=1).values
    return (amax / qmax).clamp_min(MIN_SCALE)


def _along(v: torch.Tensor, axis: int | None, ndim: int) -> torch.Tensor:
    """A (C,) vector shaped to broadcast along ``axis`` of an ``ndim`` tensor."""
    if axis is None or v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def fake_quant_weight(w: torch.Tensor, axis: int | None, qmax: int = WEIGHT_QMAX) -> torch.Tensor:
    s = _along(weight_scale(w, axis, qmax), axis, w.ndim)  # the scale comes from w: |w / s| <= qmax up to rounding
    q = round_ste(w / s)
    q = q + (q.clamp(-qmax, qmax) - q).detach()  # a guard that keeps the largest weight's gradient
    return q * s


@dataclass(frozen=True)
class WeightSlot:
    """A DequantizeLinear reading an INT8 weight or INT32 bias: which trainable tensor replaces it."""

    key: str  # the trainable parameter's key
    quantized: str  # the integer initializer written back
    scale: str  # its scale initializer
    axis: int | None  # per-channel axis, None for one scale
    bias_of: str | None = None  # for a bias: the weight slot key whose scale times the input scale is its grid
    input_scale: str | None = None  # for a bias: the activation scale initializer of the op's input


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _key(name: str) -> str:
    """A ParameterDict key for an initializer name (unique: the name's CRC is part of it)."""
    return "p" + "".join(c if c.isalnum() else "_" for c in name)[-60:] + f"_{zlib.crc32(name.encode()):08x}"


class QDQGraph(nn.Module):
    """Runs a Q/DQ ONNX graph (B,3,H,W) -> (B,C) in torch, trainable, with fake quantization."""

    def __init__(self, qdq: onnx.ModelProto, float_model: onnx.ModelProto, weight_qmax: int = WEIGHT_QMAX) -> None:
        super().__init__()
        self.weight_qmax = weight_qmax  # weights live on [-weight_qmax, weight_qmax] (the flavour's grid)
        g = qdq.graph
        self.nodes = list(g.node)
        self.attrs = [_attrs(n) for n in self.nodes]
        self.input_name, self.output_name = g.input[0].name, g.output[0].name
        inits = {t.name: t for t in g.initializer}
        self.int_range: dict[str, tuple[int, int]] = {}  # zero-point initializer -> (qmin, qmax)
        self.consts: dict[str, torch.Tensor] = {}
        self.params = nn.ParameterDict()
        self.keys: dict[str, str] = {}  # activation scale / float bias initializer -> parameter key
        self.slots: dict[str, WeightSlot] = {}  # weight/bias DQ output -> slot
        float_inputs = {n.name: list(n.input) for n in float_model.graph.node}
        float_inits = {t.name: numpy_helper.to_array(t) for t in float_model.graph.initializer}
        producers = {o: n for n in self.nodes for o in n.output}
        consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for n in self.nodes:
            for i, name in enumerate(n.input):
                consumers.setdefault(name, []).append((n, i))
        for name, t in inits.items():
            self.consts[name] = torch.from_numpy(numpy_helper.to_array(t).copy())
        for n in self.nodes:
            if n.op_type == "QuantizeLinear":
                self._activation(n, inits)
            elif n.op_type == "DequantizeLinear" and n.input[0] in inits:
                self._weight_slot(n, inits, consumers, producers, float_inputs, float_inits)
            elif n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2] in inits \
                    and inits[n.input[2]].data_type == onnx.TensorProto.FLOAT:
                self._float_param(n.input[2])  # a bias kept in float (the TensorRT flavour)
        self.scale_names = {n.input[1] for n in self.nodes if n.op_type == "QuantizeLinear"}
        self.axes = {slot.key: slot.axis for slot in self.slots.values()}  # weight key -> per-channel axis
        for n in self.nodes:
            if n.op_type not in OPS:
                raise UserError(f"quantization-aware training does not handle the ONNX op {n.op_type!r} "
                                f"(node {n.name}) yet: export with post-training INT8 (--int8 without --qat)")

    # ---------------------------------------------------------------- building

    def _activation(self, n: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> None:
        scale, zp = n.input[1], n.input[2] if len(n.input) > 2 else ""
        if scale not in self.keys:
            self._float_param(scale)
        dtype = inits[zp].data_type if zp else onnx.TensorProto.UINT8
        if dtype not in INT_RANGES:
            raise UserError(f"Q/DQ graph: activation {n.input[0]} is quantized to type {dtype}, not uint8/int8")
        self.int_range[zp] = INT_RANGES[dtype]

    def _float_param(self, name: str) -> None:
        self.keys[name] = _key(name)
        self.params[self.keys[name]] = nn.Parameter(self.consts[name].float().clone())

    def _weight_slot(self, n, inits, consumers, producers, float_inputs, float_inits) -> None:
        users = consumers.get(n.output[0], [])
        if not users:
            return
        user, index = users[0]
        original = float_inputs.get(user.name, [])
        if index >= len(original) or original[index] not in float_inits:
            raise UserError(f"Q/DQ graph: no float tensor for input {index} of {user.name} in the FP32 graph "
                            f"(the two graphs were not made from the same model)")
        key = _key(n.output[0])
        self.params[key] = nn.Parameter(torch.from_numpy(float_inits[original[index]].astype(np.float32).copy()))
        scale_dims = inits[n.input[1]].dims
        axis = _attrs(n).get("axis", 1) if len(scale_dims) == 1 and scale_dims[0] > 1 else None
        if axis is not None and axis < 0:
            axis += len(float_inits[original[index]].shape)
        if inits[n.input[0]].data_type == onnx.TensorProto.INT32:  # a bias on the grid s_x * s_w
            weight = producers.get(user.input[1])
            act = producers.get(user.input[0])
            if weight is None or act is None or act.op_type != "DequantizeLinear":
                raise UserError(f"Q/DQ graph: the INT32 bias of {user.name} has no quantized input and weight")
            self.slots[n.output[0]] = WeightSlot(key, n.input[0], n.input[1], axis, _key(weight.output[0]),
                                                 act.input[1])
        else:
            self.slots[n.output[0]] = WeightSlot(key, n.input[0], n.input[1], axis)

    def weights(self) -> list[nn.Parameter]:
        """The trainable weights and biases (float; quantized on the fly where the graph has them INT8)."""
        return [self.params[key] for name, key in self.keys.items() if name not in self.scale_names] + \
            [self.params[slot.key] for slot in self.slots.values()]

    def scales(self) -> list[nn.Parameter]:
        """The activation scales of the Q/DQ pairs."""
        return [self.params[self.keys[name]] for name in sorted(self.scale_names)]

    # ---------------------------------------------------------------- running

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, C)
        env: dict[str, torch.Tensor | None] = {self.input_name: x, "": None}
        for node, attrs in zip(self.nodes, self.attrs):
            if node.op_type == "DequantizeLinear" and node.output[0] in self.slots:
                env[node.output[0]] = self._weight(self.slots[node.output[0]])
                continue
            args = [self._value(env, name) for name in node.input]
            out = OPS[node.op_type](self, node, args, attrs)
            for name, value in zip(node.output, out if isinstance(out, tuple) else (out,)):
                env[name] = value
        return env[self.output_name]

    def _value(self, env: dict, name: str) -> torch.Tensor | None:
        if name in env:
            return env[name]
        if name in self.keys:
            return self.params[self.keys[name]]
        return self.consts[name]

    def _weight(self, slot: WeightSlot) -> torch.Tensor:
        w = self.params[slot.key]
        if slot.bias_of is None:
            return fake_quant_weight(w, slot.axis, self.weight_qmax)
        grid = self._bias_grid(slot)
        return round_ste(w / grid).clamp(-INT32_MAX, INT32_MAX) * grid  # the INT32 bias onnxruntime adds

    def _bias_grid(self, slot: WeightSlot) -> torch.Tensor:
        """A bias's step: s_x · s_w, its input's activation scale times its weight's (per-channel) scale."""
        s_w = weight_scale(self.params[slot.bias_of], self.axes[slot.bias_of], self.weight_qmax)
        return s_w * self.params[self.keys[slot.input_scale]].clamp_min(MIN_SCALE)

    def qrange(self, zp_name: str) -> tuple[int, int]:
        return self.int_range.get(zp_name, INT_RANGES[onnx.TensorProto.UINT8])

    # ---------------------------------------------------------------- writing back

    def write_back(self, qdq: onnx.ModelProto) -> onnx.ModelProto:
        """``qdq`` with this module's trained values: the graph onnxruntime will run, unchanged in structure."""
        values: dict[str, np.ndarray] = {}
        for name, key in self.keys.items():
            v = self.params[key].detach()
            values[name] = (v.clamp_min(MIN_SCALE) if name in self.scale_names else v).numpy()
        for slot in self.slots.values():
            w = self.params[slot.key].detach()
            if slot.bias_of is None:
                s = weight_scale(w, slot.axis, self.weight_qmax)
                values[slot.quantized] = torch.clamp(torch.round(w / _along(s, slot.axis, w.ndim)),
                                                     -self.weight_qmax, self.weight_qmax).numpy()
            else:  # on its INT32 grid, never past INT32's range (a near-zero weight channel has a tiny grid)
                s = self._bias_grid(slot).detach()
                values[slot.quantized] = torch.nan_to_num(torch.round(w.double() / s.double()), 0.0, INT32_MAX,
                                                          -INT32_MAX).clamp(-INT32_MAX, INT32_MAX).numpy()
            values[slot.scale] = s.numpy()
        out = copy.deepcopy(qdq)
        for t in out.graph.initializer:
            if t.name in values:
                old = numpy_helper.to_array(t)
                new = values[t.name].reshape(old.shape).astype(old.dtype)
                t.CopyFrom(numpy_helper.from_array(new, t.name))
        return out



# ---------------------------------------------------------------------------- the ops (ONNX semantics)

Op = Callable[[QDQGraph, onnx.NodeProto, list, dict], Any]


def _quantize(m: QDQGraph, node, a, at) -> torch.Tensor:
    x, s = a[0], a[1].clamp_min(MIN_SCALE)
    zp_name = node.input[2] if len(node.input) > 2 else ""
    z = a[2].float() if len(a) > 2 and a[2] is not None else torch.zeros(())
    qmin, qmax = m.qrange(zp_name)
    return torch.clamp(round_ste(x / s) + z, qmin, qmax)  # integer-valued float tensor


def _dequantize(m: QDQGraph, node, a, at) -> torch.Tensor:
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
