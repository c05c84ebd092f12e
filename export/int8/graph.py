"""What INT8 quantization is fed: calibration batches, the pre-processed graph, and its weighted nodes.

``BatchReader`` and ``calibration_sample`` turn training images into onnxruntime calibrator input;
``preprocess`` prepares the FP32 graph; ``edge_nodes`` and ``rank_sensitive`` name the weighted
nodes the remedy ladder (``export.int8.ladder``) may keep in float.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, quant_pre_process

from export.evaluation import ImageBatches
from export.quiet import quiet
from formats.datasets import SubsetSource
from formats.progress import Step

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


def weighted_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Conv/Gemm/MatMul whose second input is a weight: an initializer, directly (float) or through
    a DequantizeLinear (INT8). An attention MatMul of two activations (q·kᵀ) has no weight."""
    init = {t.name for t in graph.initializer}
    dq_input = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return [n for n in graph.node if n.op_type in WEIGHTED_OPS and len(n.input) > 1
            and (n.input[1] in init or dq_input.get(n.input[1]) in init)]


# --------------------------------------------------------------------------- calibration data

class BatchReader(CalibrationDataReader):
    """Feeds onnxruntime's calibrator ``{input: (B,3,H,W) float32}`` batches; ``rewind(step)``: each
    batch read advances that ``formats.progress`` stage by its images (calibration is never silent)."""

    def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
        self.input_name, self.batches = input_name, _equal_batches(batches)
        self._it, self._step = iter(self.batches), None

    @property
    def images(self) -> int:
        return sum(len(b) for b in self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        if x is not None and self._step is not None:
            self._step.advance(len(x))
        return None if x is None else {self.input_name: x}

    def rewind(self, step: Step | None = None) -> None:
        self._it, self._step = iter(self.batches), step


def _equal_batches(batches: list[np.ndarray]) -> list[np.ndarray]:
    """The same images in batches of one size: onnxruntime's histogram calibrators (entropy,
    percentile; seen with onnxruntime 1.32) fail on a shorter last batch ("inhomogeneous shape")."""
    sizes = {len(b) for b in batches}
    if len(sizes) <= 1:
        return batches
    size = math.gcd(*sizes)
    return [b[i:i + size] for b in batches for i in range(0, len(b), size)]  # (size, 3, H, W) each


def calibration_sample(source, preprocessing: dict, images: int, seed: int, batch_size: int,
                       step: Step | None = None) -> list[np.ndarray]:
    """A seeded sample of the training split through the evaluation transform, as batches (``step``
    advances by each batch decoded)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(source))[:images].tolist()
    batches = []
    for x, _ in ImageBatches(SubsetSource(source, sorted(order)), preprocessing, batch_size):
        batches.append(x)  # (B, 3, H, W)
        if step is not None:
            step.advance(len(x))
    return batches


# --------------------------------------------------------------------------- the graph

def preprocess(src: Path, dst: Path) -> None:
    """Shape inference + graph optimisation before quantization (onnxruntime's recommendation)."""
    with quiet("onnxruntime quant_pre_process"):
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)


def shape_nodes(graph: onnx.GraphProto) -> list[str]:
    """Nodes no pixel reaches: arithmetic on the input's shape (after a Shape op), e.g. the pads of TF
    "same" padding (timm's ``tf_*`` models), Shape -> Cast -> Div -> Ceil -> ... -> Pad, and any
    computation on constants alone.

    They must stay float: quantizing those small integers (a pad of 1, a size of 33) to an 8-bit grid
    rounds them, and the padding, hence every later tensor, comes out wrong (measured: an ImageNet
    EfficientNet-Lite0's CPU INT8 graph lost 27 points of top-1 until these were excluded).
    """
    values = {i.name for i in graph.input} - {t.name for t in graph.initializer}  # tensors that carry pixels
    names = []
    for node in graph.node:  # ONNX nodes are topologically sorted
        if node.op_type != "Shape" and any(i in values for i in node.input):
            values.update(node.output)
        elif node.name:
            names.append(node.name)
    return names


def edge_nodes(model: onnx.ModelProto) -> list[str]:
    """The first convolution and the classifier: the layers INT8 hurts most in a CNN."""
    weighted = [n.name for n in weighted_nodes(model.graph)]
    return list(dict.fromkeys([weighted[0], weighted[-1]])) if weighted else []


def rank_sensitive(pre: Path, qdq: Path, reader: BatchReader, work: Path, step: Step | None = None) -> list[str]:
    """Weighted nodes ordered by the quantization error (lowest SQNR first) of their input activation;
    ``step`` advances by the images run (``2 * reader.images``: the float graph, then the Q/DQ one)."""
    from onnxruntime.quantization import qdq_loss_debug as dbg
    aug_f, aug_q = work / "aug_float.onnx", work / "aug_qdq.onnx"
    with quiet("onnxruntime qdq_loss_debug"):
        dbg.modify_model_output_intermediate_tensors(str(pre), str(aug_f))
        dbg.modify_model_output_intermediate_tensors(str(qdq), str(aug_q))
        reader.rewind(step)
        float_acts = dbg.collect_activations(str(aug_f), reader)
        reader.rewind(step)
        qdq_acts = dbg.collect_activations(str(aug_q), reader)
        reader.rewind()
        errors = dbg.compute_activation_error(dbg.create_activation_matching(qdq_acts, float_acts))
    consumers: dict[str, list[str]] = {}
    for node in weighted_nodes(onnx.load(str(pre)).graph):
        consumers.setdefault(node.input[0], []).append(node.name)
    ranked = sorted((e["qdq_err"], t) for t, e in errors.items() if t in consumers)
    return list(dict.fromkeys(n for _, t in ranked for n in consumers[t]))
