"""A Triton Inference Server model repository: one model per bundle artifact.

``<bundle>/triton/<name>_<variant>/config.pbtxt`` + ``1/model.onnx`` (platform
``onnxruntime_onnx``) or ``1/model.plan`` (``tensorrt_plan``), with dynamic batching.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

TRITON_DIR = "triton"


def model_name(bundle_name: str, artifact: dict[str, Any]) -> str:
    """``demo_fp32``, ``demo_int8``, ``demo_int8_trt``, ``demo_fp16_engine``: Triton-safe names."""
    variant = artifact["precision"]
    if artifact["format"] == "tensorrt":
        variant += "_engine"
    elif artifact["target"] == "tensorrt":
        variant += "_trt"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{bundle_name}_{variant}")


def config_pbtxt(name: str, artifact: dict[str, Any], input_shape: list[int], num_classes: int,
                 max_batch: int, queue_delay_us: int) -> str:
    """Triton's protobuf text config; dims exclude the batch axis (max_batch_size > 0 adds it)."""
    engine = artifact["format"] == "tensorrt"
    platform = "tensorrt_plan" if engine else "onnxruntime_onnx"
    kind = "KIND_CPU" if artifact["target"] == "onnxruntime-cpu" else "KIND_GPU"
    dims = ", ".join(str(d) for d in input_shape)
    return (f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {max_batch}\n'
            f'input [\n  {{\n    name: "input"\n    data_type: TYPE_FP32\n    dims: [ {dims} ]\n  }}\n]\n'
            f'output [\n  {{\n    name: "logits"\n    data_type: TYPE_FP32\n    dims: [ {num_classes} ]\n'
            f'    label_filename: "labels.txt"\n  }}\n]\n'
            f'dynamic_batching {{\n  max_queue_delay_microseconds: {queue_delay_us}\n}}\n'
            f'instance_group [\n  {{\n    count: 1\n    kind: {kind}\n  }}\n]\n')


def write_repository(bundle: Path, name: str, artifacts: list[dict[str, Any]], input_shape: list[int],
                     num_classes: int, max_batch: int, queue_delay_us: int) -> list[str]:
    """Write one Triton model per artifact under ``bundle/triton``; returns the model names."""
    names = []
    for art in artifacts:
        model = model_name(name, art)
        version = bundle / TRITON_DIR / model / "1"
        version.mkdir(parents=True)
        suffix = "plan" if art["format"] == "tensorrt" else "onnx"
        shutil.copyfile(bundle / art["file"], version / f"model.{suffix}")
        shutil.copyfile(bundle / "labels.txt", version.parent / "labels.txt")
        (version.parent / "config.pbtxt").write_text(
            config_pbtxt(model, art, input_shape, num_classes, max_batch, queue_delay_us))
        names.append(model)
    return names
