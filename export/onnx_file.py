"""ONNX files: the student traced with a dynamic batch axis into one self-contained file, and its metadata."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch

from export.quiet import quiet

INPUT, OUTPUT = "input", "logits"
FP32_FILE = "model.onnx"


def export_onnx(model: torch.nn.Module, path: Path, input_size: list[int], opset: int) -> None:
    """Trace ``model`` (B,3,H,W) -> (B,C) to ``path`` with a symbolic batch dimension.

    The TorchScript exporter (dynamo=False) is used on purpose: it names nodes after the module
    path (``/backbone/conv1/Conv``), which makes the INT8 recipe's excluded nodes readable, and it
    emits GlobalAveragePool/Gemm, which onnxruntime's quantizer handles natively.
    """
    dummy = torch.zeros(2, 3, *input_size)
    # torch.onnx's warnings are its own: the legacy exporter is deprecated (not broken), and a constant
    # Pad (TF padding fixed by students.registry.deployable) leaves its pads as a small constant subgraph
    # with a step -1 Slice ("Constant folding - Only steps=1"), which onnxruntime folds at load
    with quiet("torch.onnx export"):
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, do_constant_folding=True)


def set_metadata(path: Path, class_names: list[str], preprocessing: dict) -> None:
    """Store labels and preprocessing in the graph so a lone model file is self-describing."""
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({"class_names": json.dumps(class_names), "preprocessing": json.dumps(preprocessing),
                  "producer": "vl2lite-edge export"})
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save_model(model, str(path), save_as_external_data=False)
    check_self_contained(path)


def check_self_contained(path: Path) -> None:
    """A bundle ships single files: no initializer may live in an external data file."""
    model = onnx.load(str(path), load_external_data=False)
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise RuntimeError(f"{path.name} references external data for {len(external)} tensors")
    onnx.checker.check_model(str(path))


def batch_dim(path: Path) -> str:
    dim = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_param or str(dim.dim_value)
