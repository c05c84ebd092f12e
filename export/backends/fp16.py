"""FP16 ONNX for GPUs (``--fp16``): FP16 weights and compute, float32 inputs and outputs (Cast at the edges).

Also built for ``--trt``: TensorRT 11 builds FP16 engines only from an FP16 graph.
"""
from __future__ import annotations

import onnx

from export.evaluation import accuracy_entry, ort_measured_on, ort_runner, parity, predict
from export.job import Backend, Built, ExportJob
from export.onnx_file import FP32_FILE, check_self_contained
from export.quiet import quiet
from export.settings import ExportOptions
from formats.errors import UserError
from formats.progress import stage

FP16_FILE = "model.fp16.onnx"


def convert_fp16(src: onnx.ModelProto) -> onnx.ModelProto:
    """onnxconverter-common's converter; keep_io_types keeps the float32 interface of model.onnx."""
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise UserError("--fp16/--trt need onnxconverter-common: pip install onnxconverter-common "
                        "(or install vl2lite-edge[export])") from None
    with quiet("onnxconverter-common"):  # one warning per tiny weight clamped to the fp16 range
        return float16.convert_float_to_float16(src, keep_io_types=True, disable_shape_infer=False)


def count_fp16_initializers(model: onnx.ModelProto) -> tuple[int, int]:
    """(float16 initializers, float32 initializers): an FP16 artifact must hold its weights in FP16."""
    types = [t.data_type for t in model.graph.initializer]
    return types.count(onnx.TensorProto.FLOAT16), types.count(onnx.TensorProto.FLOAT)


def build(job: ExportJob) -> Built:
    path = job.dir / FP16_FILE
    with stage(f"{FP16_FILE} (fp16)", total=job.images_per_artifact, unit="image") as step:
        model = convert_fp16(onnx.load(str(job.dir / FP32_FILE)))
        onnx.save_model(model, str(path), save_as_external_data=False)
        check_self_contained(path)
        half, single = count_fp16_initializers(model)
        if half == 0 or single > 0:
            raise RuntimeError(f"{FP16_FILE}: {half} fp16 and {single} fp32 initializers; not an FP16 model")
        run = ort_runner(path)  # onnxruntime CPU runs fp16 graphs (slowly)
        pred = predict(run, job.eval_batches, step)
        par = parity(pred, job.reference, job.options.parity_images)
        verdict = job.verdict(run, pred, step)
        step.note(f"parity with PyTorch: max |logit diff| {par.max_abs_logit_diff:.2e}, top-1 agreement "
                  f"{par.top1_agreement:.3f}")
    return Built((job.entry(FP16_FILE, "onnx", "fp16", "gpu", accuracy_entry(pred, job.reference),
                            budget=verdict, parity=par, evaluated_with="onnxruntime-cpu",
                            measured_on=ort_measured_on()),))


def wanted(options: ExportOptions) -> bool:
    """TensorRT 11 builds FP16 engines only from an FP16 graph, so --trt needs it too."""
    return options.wants("fp16") or options.wants("trt")


BACKEND = Backend(name="fp16", order=10, build=build, wanted=wanted,
                  help="model.fp16.onnx (FP16 weights and compute, float32 inputs and outputs)")
