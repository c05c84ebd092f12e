"""A Q/DQ ONNX graph as a trainable torch module: the INT8 graph onnxruntime runs, with fake quantization.

Quantization-aware training (``export.int8.qat``) trains the deployed graph itself. onnxruntime's
quantizer places the QuantizeLinear/DequantizeLinear pairs exactly as for post-training INT8
(which tensors are INT8, which ops fuse into integer kernels); ``QDQGraph`` runs that graph in
torch with

- every activation Q -> DQ pair as a fake quantizer with a trainable scale (zero point fixed)::

      q = clamp(round(x / s) + z, qmin, qmax)      round with a straight-through gradient
      x_hat = (q - z) * s                           qmin, qmax: the zero point's type (uint8 or int8)

- every INT8 weight replaced by a trainable float weight, quantized per output channel at every
  step the way ``write_back`` will store it: ``s_c = max|w_c| / Q``, ``q = clamp(round(w / s_c), -Q, Q)``,
  with ``Q`` the flavour's grid (127 for TensorRT's S8S8, 64 for the CPU's 7-bit U8S8 weights, which
  no x86 CPU's int16 pair sums can saturate: ``export.int8.safety``);
- every quantized (INT32) bias as a trainable float bias, rounded at every step (straight-through, within
  INT32) onto the grid ``s_x * s_w`` on which onnxruntime adds it.

``write_back`` turns the trained values into the same graph again (INT8 weights, INT32 biases,
new scales): nothing is calibrated at export, and onnxruntime runs what was trained.
"""

import copy
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from export.int8.fake_quant import (INT32_MAX, INT_RANGES, MIN_SCALE, WEIGHT_QMAX, along, fake_quant_weight, round_ste,
                                    weight_scale)
from export.int8.qat_ops import OPS
from formats.errors import UserError


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
                values[slot.quantized] = torch.clamp(torch.round(w / along(s, slot.axis, w.ndim)),
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
