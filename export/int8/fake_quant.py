"""Fake quantization in torch: the rounding onnxruntime does, with gradients (straight-through).

Used by ``export.int8.qat_graph`` (weights and biases) and ``export.int8.qat_ops`` (activations).
"""
from __future__ import annotations

import numpy as np
import onnx
import torch

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


def along(v: torch.Tensor, axis: int | None, ndim: int) -> torch.Tensor:
    """A (C,) vector shaped to broadcast along ``axis`` of an ``ndim`` tensor."""
    if axis is None or v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def fake_quant_weight(w: torch.Tensor, axis: int | None, qmax: int = WEIGHT_QMAX) -> torch.Tensor:
    s = along(weight_scale(w, axis, qmax), axis, w.ndim)  # the scale comes from w: |w / s| <= qmax up to rounding
    q = round_ste(w / s)
    q = q + (q.clamp(-qmax, qmax) - q).detach()  # a guard that keeps the largest weight's gradient
    return q * s
