"""A Triton Inference Server model repository (``--triton``): one model per bundle artifact.

Built last: it serves the artifacts the backends before it built (those within the accuracy
budget; ``--best-effort`` misses stay out) and adds no artifact of its own, only the manifest's
``triton`` record and the files under ``triton/``.

``<bundle>/triton/<name>_<variant>/config.pbtxt`` + ``1/model.onnx`` (platform
``onnxruntime_onnx``) or ``1/model.plan`` (``tensorrt_plan``), with dynamic batching.

An ONNX artifact whose target is ``tensorrt`` (the symmetric S8S8 Q/DQ ``model.int8.trt.onnx``)
is served by the onnxruntime backend through its TensorRT execution accelerator, with
``precision_mode`` set from the artifact's precision; without it onnxruntime would run the Q/DQ
graph on its CUDA provider, not as TensorRT INT8. Parameter names and values follow the
onnxruntime_backend README ("ONNX Runtime with TensorRT optimization"): ``precision_mode`` is one of
FP32, FP16, BF16, INT8; no calibration table is given, since the graph carries its Q/DQ scales (the
backend refuses one for a Q/DQ model).

``validate_config`` checks a config against Triton's own ``ModelConfig`` protobuf schema (shipped by
``tritonclient[grpc]``, a test dependency; the export itself does not need it).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Sequence

from export.job import Backend, Built, ExportJob
from formats.manifest import ArtifactEntry, TritonRepository

TRITON_DIR = "triton"
# Where Triton places an instance: the U8S8 model is CPU-only, FP32 runs anywhere (GPU when there is
# one, else CPU), everything else needs the GPU.
KINDS = {"onnxruntime-cpu": "KIND_CPU", "any": "KIND_AUTO"}
TRT_PRECISION_MODES = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}


def model_name(bundle_name: str, artifact: ArtifactEntry) -> str:
    """``demo_fp32``, ``demo_int8``, ``demo_int8_trt``, ``demo_fp16_engine``: Triton-safe names."""
    variant = artifact.precision
    if artifact.format == "tensorrt":
        variant += "_engine"
    elif artifact.target == "tensorrt":
        variant += "_trt"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{bundle_name}_{variant}")


def tensorrt_accelerator(artifact: ArtifactEntry) -> str:
    """The ``optimization`` block for an ONNX artifact meant for TensorRT; empty for any other artifact."""
    if artifact.format != "onnx" or artifact.target != "tensorrt":
        return ""
    precision = artifact.precision
    if precision not in TRT_PRECISION_MODES:
        raise ValueError(f"{artifact.file}: no TensorRT precision_mode for {precision!r}")
    return ('optimization {\n  execution_accelerators {\n    gpu_execution_accelerator [\n      {\n'
            '        name: "tensorrt"\n'
            f'        parameters {{ key: "precision_mode" value: "{TRT_PRECISION_MODES[precision]}" }}\n'
            '      }\n    ]\n  }\n}\n')


def config_pbtxt(name: str, artifact: ArtifactEntry, input_shape: list[int], num_classes: int,
                 max_batch: int, queue_delay_us: int) -> str:
    """Triton's protobuf text config; dims exclude the batch axis (max_batch_size > 0 adds it).

    Engines are ``tensorrt_plan``; ONNX files are ``onnxruntime_onnx``, on the CPU when their target
    is onnxruntime-cpu, otherwise on the GPU, through the TensorRT accelerator when their target is
    tensorrt (``tensorrt_accelerator``).
    """
    engine = artifact.format == "tensorrt"
    platform = "tensorrt_plan" if engine else "onnxruntime_onnx"
    kind = KINDS.get(artifact.target, "KIND_GPU")
    dims = ", ".join(str(d) for d in input_shape)
    return (f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {max_batch}\n'
            f'input [\n  {{\n    name: "input"\n    data_type: TYPE_FP32\n    dims: [ {dims} ]\n  }}\n]\n'
            f'output [\n  {{\n    name: "logits"\n    data_type: TYPE_FP32\n    dims: [ {num_classes} ]\n'
            f'    label_filename: "labels.txt"\n  }}\n]\n'
            f'dynamic_batching {{\n  max_queue_delay_microseconds: {queue_delay_us}\n}}\n'
            f'instance_group [\n  {{\n    count: 1\n    kind: {kind}\n  }}\n]\n'
            + tensorrt_accelerator(artifact))


def validate_config(text: str) -> Any:
    """Parse ``text`` as Triton's ``ModelConfig`` (tritonclient's copy of model_config.proto).

    Returns the message; raises ``ValueError`` naming the line when the schema rejects the text
    (unknown field, bad enum value, wrong type, a field set twice). Needs ``tritonclient[grpc]``.
    """
    try:
        from google.protobuf import text_format
        from tritonclient.grpc.model_config_pb2 import ModelConfig
    except ImportError as exc:
        raise ImportError("validating a Triton config needs tritonclient: pip install 'tritonclient[grpc]' "
                          "(or install vl2lite-edge[dev])") from exc
    try:
        return text_format.Parse(text, ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"not a valid Triton model config: {exc}") from None


def write_repository(bundle: Path, name: str, artifacts: Sequence[ArtifactEntry], input_shape: list[int],
                     num_classes: int, max_batch: int, queue_delay_us: int) -> list[str]:
    """Write one Triton model per artifact under ``bundle/triton``; returns the model names."""
    names = []
    for art in artifacts:
        model = model_name(name, art)
        version = bundle / TRITON_DIR / model / "1"
        version.mkdir(parents=True)
        suffix = "plan" if art.format == "tensorrt" else "onnx"
        shutil.copyfile(bundle / art.file, version / f"model.{suffix}")
        shutil.copyfile(bundle / "labels.txt", version.parent / "labels.txt")
        (version.parent / "config.pbtxt").write_text(
            config_pbtxt(model, art, input_shape, num_classes, max_batch, queue_delay_us))
        names.append(model)
    return names


def build(job: ExportJob) -> Built:
    served = [a for a in job.artifacts if a.within_budget is not False]  # --best-effort misses stay out
    o, meta = job.options, job.meta
    models = write_repository(job.dir, job.name, served, [3, *meta.input_size], meta.num_classes, o.max_batch,
                              o.triton_queue_delay_us)
    return Built(manifest={"triton": TritonRepository(TRITON_DIR, tuple(models))})


BACKEND = Backend(name="triton", order=90, build=build,
                  help="also write a Triton model repository under <bundle>/triton")
