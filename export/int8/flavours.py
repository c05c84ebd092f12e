"""The two INT8 flavours of a bundle, how a graph is quantized to one, and the check that it is INT8.

The CPU flavour's weights are 7-bit ([-64, 64], onnxruntime's ``reduce_range``) so that one graph
computes the same logits on every x86 CPU: without VNNI (AVX2, AVX-512 without VNNI) onnxruntime's
U8S8 kernels sum pairs of u8·s8 products in int16 (VPMADDUBSW), and 255·127·2 = 64,770 saturates
where 255·64·2 = 32,640 cannot. On VNNI and AMX CPUs the kernels are the same either way (same
speed, ``benchmarks/int8_isa.py``). ``export.int8.safety`` checks every written graph for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from export.evaluation import REFERENCE_SEMANTICS, Runner, ort_runner
from export.int8.graph import BatchReader, shape_nodes, weighted_nodes
from export.int8.ladder import Recipe
from export.int8.safety import INT16_MAX, u8s8_saturation
from export.job import log
from export.quiet import quiet
from formats.progress import Step
from formats.quantization import GraphCounts

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}
REDUCED_WEIGHT_QMAX = 64  # 255 * 64 * 2 = 32,640 <= 32,767: an int16 pair sum of u8·s8 products cannot saturate


@dataclass(frozen=True)
class Flavour:
    file: str
    target: str
    activations: QuantType
    extra_options: dict
    evaluated_with: str
    fused: bool  # scored by onnxruntime with its graph optimisations (fused integer kernels) or without
    weight_qmax: int  # weights are integers in [-weight_qmax, weight_qmax]

    def runner(self, path: Path) -> Runner:
        """How this flavour's graphs are scored here: as their runtime computes them."""
        return ort_runner(path, optimize=self.fused)

    @property
    def reduce_range(self) -> bool:
        """7-bit weights: onnxruntime's ``reduce_range`` quantizes them to [-64, 64]."""
        return self.weight_qmax == REDUCED_WEIGHT_QMAX

    @property
    def symmetric(self) -> bool:
        return self.activations == QuantType.QInt8

    @property
    def activation_type(self) -> str:
        return "int8" if self.symmetric else "uint8"


# onnxruntime is this graph's runtime: scored as it runs it, fused integer kernels included.
CPU = Flavour("model.int8.onnx", "onnxruntime-cpu", QuantType.QUInt8, {}, "onnxruntime-cpu", fused=True,
              weight_qmax=REDUCED_WEIGHT_QMAX)
# TensorRT takes INT8 Q/DQ on activations and weights only; biases stay float (no INT32 DequantizeLinear).
# No TensorRT here: scored by the graph's Q/DQ reference semantics, which TensorRT builds its engine
# from, not by onnxruntime's fused S8S8 CPU kernels, which differ from them (10% of top-1 on MobileNetV3).
TENSORRT = Flavour("model.int8.trt.onnx", "tensorrt", QuantType.QInt8,
                   {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
                   REFERENCE_SEMANTICS, fused=False, weight_qmax=127)
FLAVOURS = (CPU, TENSORRT)


def quantize(pre: Path, dst: Path, flavour: Flavour, recipe: Recipe, reader: BatchReader,
             step: Step | None = None) -> None:
    """Calibrate on ``reader``'s images (``step`` advances by each batch) and write the Q/DQ graph ``dst``."""
    reader.rewind(step)
    keep_float = list(recipe.excluded) + shape_nodes(onnx.load(str(pre)).graph)  # shape arithmetic stays exact
    with quiet("onnxruntime quantize_static"):  # its calibrators print() and log; stdout is the bundle path
        quantize_static(str(pre), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=flavour.activations, weight_type=QuantType.QInt8,
                        calibrate_method=METHODS[recipe.method], nodes_to_exclude=keep_float,
                        reduce_range=flavour.reduce_range, extra_options=dict(flavour.extra_options))
    reader.rewind()  # the stage ends with this call


def verify_int8(path: Path, flavour: Flavour, excluded: tuple[str, ...] = ()) -> GraphCounts:
    """Count what makes the file INT8; raise if it is not (it must never be labelled INT8 otherwise).

    Checked: Q and DQ nodes exist; every weighted op but the ``excluded`` ones (kept in float on
    purpose) reads its weight through a DequantizeLinear of an INT8 initializer; activation zero
    points have the flavour's type; for TensorRT no DequantizeLinear reads an INT32 tensor (a
    quantized bias, which TensorRT does not accept); for U8S8 no op can saturate an int16 pair sum
    on any x86 CPU (``export.int8.safety``; recorded as ``saturation``).
    """
    g = onnx.load(str(path)).graph
    ops = [n.op_type for n in g.node]
    init = {t.name: t.data_type for t in g.initializer}
    dq_of = {n.output[0]: n for n in g.node if n.op_type == "DequantizeLinear"}
    zp_types = {init.get(n.input[2]) for n in g.node if n.op_type == "QuantizeLinear" and len(n.input) > 2}
    want = onnx.TensorProto.UINT8 if flavour.activations == QuantType.QUInt8 else onnx.TensorProto.INT8
    weighted = weighted_nodes(g)
    int8_weighted = sum(1 for n in weighted if n.input[1] in dq_of
                        and init.get(dq_of[n.input[1]].input[0]) == onnx.TensorProto.INT8)
    u8s8 = flavour.activations == QuantType.QUInt8  # the same logits on every x86 CPU, or no INT8 label
    counts = GraphCounts(
        quantize_linear=ops.count("QuantizeLinear"), dequantize_linear=ops.count("DequantizeLinear"),
        int8_initializers=sum(1 for t in init.values() if t == onnx.TensorProto.INT8),
        int8_weighted_ops=int8_weighted, weighted_ops=len(weighted),
        int32_dequantize=sum(1 for n in dq_of.values() if init.get(n.input[0]) == onnx.TensorProto.INT32),
        saturation=u8s8_saturation(path) if u8s8 else None)
    problems = []
    if counts.quantize_linear == 0 or counts.dequantize_linear == 0 or int8_weighted == 0:
        problems.append("no INT8 weights behind DequantizeLinear")
    elif int8_weighted != len(weighted) - len(set(excluded)):
        problems.append(f"{int8_weighted} of {len(weighted)} weighted ops read INT8 weights, "
                        f"{len(weighted) - len(set(excluded))} expected")
    if zp_types != {want}:
        problems.append(f"activation zero points {sorted(map(str, zp_types))}, expected {want}")
    if flavour is TENSORRT and counts.int32_dequantize:
        problems.append(f"{counts.int32_dequantize} INT32 DequantizeLinear (quantized biases)")
    sat = counts.saturation
    if sat is not None and not sat.safe_on_every_x86:
        problems.append(f"{sat.ops_over_limit} U8S8 ops whose int16 pair sums can saturate on "
                        f"x86 CPUs without VNNI (worst {sat.worst_pair_sum} > {INT16_MAX})")
    if problems:
        raise RuntimeError(f"{path.name} is not an INT8 Q/DQ graph for {flavour.target} ({'; '.join(problems)}; "
                           f"{counts}); refusing to label it INT8")
    return counts


def log_saturation(flavour: Flavour, counts: GraphCounts) -> None:
    sat = counts.saturation
    if sat is not None:
        log(f"{flavour.file}: {sat.u8s8_ops} U8S8 ops with weights in [-{flavour.weight_qmax}, "
            f"{flavour.weight_qmax}]: worst int16 pair sum {sat.worst_pair_sum:,} <= {sat.limit:,}, the same "
            f"integer sums on every x86 CPU (VNNI or not)")
