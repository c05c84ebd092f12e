"""TensorRT engines (``--trt``) from the bundle's ONNX files (TensorRT 10.x and 11.x Python API).

UNTESTED HERE: TensorRT cannot be installed on the development machines. This module follows
NVIDIA's documented Python API (Builder, OnnxParser, optimisation profiles, memory pool limits,
timing caches, build_serialized_network) and the 10.x -> 11.x migration guide:

- TensorRT 11 is strongly typed only: precision comes from the graph. FP16 engines are built from
  ``model.fp16.onnx``, INT8 engines from the symmetric Q/DQ ``model.int8.trt.onnx``.
- TensorRT 10 FP16 uses the classic weakly typed path (``model.onnx`` + ``BuilderFlag.FP16``);
  INT8 uses the same Q/DQ graph with a STRONGLY_TYPED network (flag required on 10.x, ignored
  on 11.x). No calibrator is ever used (deprecated in 10.1, removed in 11).

Each engine is evaluated right after its build on the evaluation split (top-1, drop, parity against
PyTorch, ``"evaluated_with": "tensorrt"``), running on the build GPU with torch tensors as buffers.

The pure parts (which file and flags per version, the sidecar, batch chunking) are tested here; the
build and the engine evaluation are not.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.backends.fp16 import FP16_FILE
from export.evaluation import Runner, accuracy_entry, parity, predict
from export.int8.flavours import TENSORRT
from export.job import Backend, Built, ExportJob, log
from export.onnx_file import FP32_FILE, INPUT
from export.settings import ExportOptions
from formats.datasets import DatasetSplits
from formats.engine import EngineSidecar, write_sidecar
from formats.errors import UserError
from formats.isa import measured_here
from formats.manifest import ArtifactEntry
from formats.progress import Step, stage

TIMING_CACHE = "timing.cache"
NOT_INSTALLED = "TensorRT is not installed here (it needs an NVIDIA GPU: pip install tensorrt)"


@dataclass(frozen=True)
class EnginePlan:
    """How one engine is built on one TensorRT major version."""

    precision: str  # fp16 | int8
    source: str  # ONNX file in the bundle
    strongly_typed: bool
    fp16_flag: bool  # BuilderFlag.FP16 (weak typing; TensorRT 10 only)

    @property
    def file(self) -> str:
        return f"model.{self.precision}.engine"


def engine_plans(trt_major: int, has_int8: bool) -> list[EnginePlan]:
    """The engines to build: FP16 always, INT8 when the bundle holds the TensorRT Q/DQ graph."""
    if trt_major >= 11:
        plans = [EnginePlan("fp16", FP16_FILE, strongly_typed=True, fp16_flag=False)]
    else:
        plans = [EnginePlan("fp16", FP32_FILE, strongly_typed=False, fp16_flag=True)]
    if has_int8:
        plans.append(EnginePlan("int8", TENSORRT.file, strongly_typed=True, fp16_flag=False))
    return plans


def tensorrt_version() -> str | None:
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return str(trt.__version__)


def device_info() -> dict[str, str]:
    """CUDA version and the GPU the engine is built on (through torch, which export needs anyway)."""
    import torch
    if not torch.cuda.is_available():
        return {"cuda": str(torch.version.cuda), "gpu": "none", "compute_capability": "none"}
    major, minor = torch.cuda.get_device_capability(0)
    return {"cuda": str(torch.version.cuda), "gpu": torch.cuda.get_device_name(0),
            "compute_capability": f"{major}.{minor}"}


def engine_sidecar(plan: EnginePlan, trt_version: str, device: dict[str, str],
                   batch: tuple[int, int, int], workspace_gib: float) -> EngineSidecar:
    """What an engine needs to be loaded safely: it only runs where these match."""
    return EngineSidecar(tensorrt=trt_version, cuda=device["cuda"], gpu=device["gpu"],
                         compute_capability=device["compute_capability"], precision=plan.precision,
                         source=plan.source, strongly_typed=plan.strongly_typed, min_batch=batch[0],
                         opt_batch=batch[1], max_batch=batch[2], workspace_gib=float(workspace_gib),
                         timing_cache=TIMING_CACHE)


def build_engine(onnx_path: Path, engine_path: Path, plan: EnginePlan, input_shape: list[int],
                 batch: tuple[int, int, int], workspace_gib: float, cache_path: Path) -> None:
    """Parse, configure and build one serialized engine (TensorRT Python API)."""
    import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT could not parse {onnx_path.name} ({errors}): export without --trt, or build "
                        f"the engine on the device with a newer TensorRT (trtexec --onnx={onnx_path.name})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT, *[(b, *input_shape) for b in batch])  # min, opt, max
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build {engine_path.name} (its log above says why): raise "
                        f"--workspace-gib, lower --max-batch, or export without --trt")
    engine_path.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))


def in_chunks(run: Runner, max_batch: int) -> Runner:
    """``run`` on batches of at most ``max_batch`` rows (the engine's optimisation profile)."""
    def chunked(x: np.ndarray) -> np.ndarray:
        return np.concatenate([run(x[i:i + max_batch]) for i in range(0, len(x), max_batch)])
    return chunked


def engine_runner(path: Path) -> Runner:
    """Run a serialized engine on the GPU with torch tensors as its buffers (TensorRT Python API)."""
    import tensorrt as trt
    import torch
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise UserError(f"TensorRT could not load the engine it just built ({path.name}): export without --trt")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inp = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    out = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
    if engine.get_tensor_dtype(inp) != trt.float32 or engine.get_tensor_dtype(out) != trt.float32:
        raise UserError(f"{path.name} does not take and return float32 as its ONNX source does: report this")

    def run(x: np.ndarray) -> np.ndarray:
        stream = torch.cuda.current_stream()  # the copy to the GPU was queued on it too
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).cuda()  # (B, 3, H, W)
        context.set_input_shape(inp, tuple(xt.shape))
        yt = torch.empty(tuple(context.get_tensor_shape(out)), dtype=torch.float32, device="cuda")  # (B, C)
        context.set_tensor_address(inp, xt.data_ptr())
        context.set_tensor_address(out, yt.data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise UserError(f"TensorRT failed to run {path.name}: export without --trt")
        stream.synchronize()
        return yt.cpu().numpy()
    return run


def engine_measured_on() -> dict[str, Any]:
    """Where an engine's figures were measured: the build GPU (``isa``: its compute capability) and TensorRT."""
    gpu = device_info()
    return {**measured_here(f"tensorrt {tensorrt_version()}, cuda {gpu['cuda']}"),
            "isa": f"cuda-sm{gpu['compute_capability'].replace('.', '')}", "gpu": gpu["gpu"],
            "compute_capability": gpu["compute_capability"]}


def evaluate_engine(job: ExportJob, plan: EnginePlan, sidecar: str, step: Step | None = None) -> ArtifactEntry:
    """The engine's manifest entry: top-1 and parity against the PyTorch student, on the evaluation split
    (``step`` advances by the images run)."""
    run = in_chunks(engine_runner(job.dir / plan.file), job.options.max_batch)
    pred = predict(run, job.eval_batches, step)
    entry = job.entry(plan.file, "tensorrt", plan.precision, "tensorrt", accuracy_entry(pred, job.reference),
                      budget=job.verdict(run, pred, step),
                      parity=parity(pred, job.reference, job.options.parity_images),
                      evaluated_with="tensorrt", measured_on=engine_measured_on(), sidecar=sidecar, source=plan.source)
    text = (f"top-1 {100 * entry.top1:.2f}% (drop {entry.top1_drop:+.2f} pts, "
            f"max|diff| {entry.parity.max_abs_logit_diff:.2e})")
    if step is not None:
        step.note(text)
    else:
        log(f"tensorrt: {plan.file}: {text}")
    return entry


def check(options: ExportOptions, checkpoint: Path, splits: DatasetSplits) -> None:
    """--trt needs TensorRT here; without it the export stops before any work, unless --best-effort."""
    if not options.best_effort and tensorrt_version() is None:
        raise UserError(f"--trt: {NOT_INSTALLED}: export on the device that has it, or pass --best-effort to "
                        f"write the bundle without engines (then build them on the device: python -m export <checkpoint> --trt)")


def build(job: ExportJob) -> Built:
    version = tensorrt_version()
    if version is None:  # only with --best-effort: check() refuses --trt without TensorRT otherwise
        log(f"WARNING: {NOT_INSTALLED}; --best-effort: the bundle has no engines")
        return Built(manifest={"tensorrt": "not installed"})
    o = job.options
    batch, device = (o.min_batch, o.opt_batch, o.max_batch), device_info()
    shape = [3, *job.preprocessing["input_size"]]
    entries = []
    for plan in engine_plans(int(version.split(".")[0]), o.wants("int8")):
        # the build is one blocking call (minutes on a large model): the stage says when it started
        with stage(f"{plan.file} (TensorRT {version}, from {plan.source})", total=job.images_per_artifact,
                   unit="image") as step:
            build_engine(job.dir / plan.source, job.dir / plan.file, plan, shape, batch, o.workspace_gib,
                         job.dir / TIMING_CACHE)
            sidecar = f"{plan.file}.json"
            write_sidecar(job.dir / sidecar, engine_sidecar(plan, version, device, batch, o.workspace_gib))
            entries.append(evaluate_engine(job, plan, sidecar, step))
    return Built(tuple(entries), {"tensorrt": version})


BACKEND = Backend(name="trt", order=30, build=build, check=check,
                  help="TensorRT engines from the ONNX files (needs the tensorrt package)")
