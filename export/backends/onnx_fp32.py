"""FP32 ONNX (``model.onnx``): always built, first; every other artifact derives from it.

A conversion, not an approximation: it must reproduce PyTorch within ``FP32_TOLERANCE``, or the
export fails (a bug to report, not a budget miss).
"""
from __future__ import annotations

from export.evaluation import FP32_TOLERANCE, accuracy_entry, ort_measured_on, ort_runner, parity, parity_ok, predict
from export.job import Backend, Built, ExportJob
from export.onnx_file import FP32_FILE, batch_dim, export_onnx, set_metadata
from formats.errors import UserError
from formats.progress import stage


def build(job: ExportJob) -> Built:
    path = job.dir / FP32_FILE
    with stage(f"{FP32_FILE} (fp32)", total=job.images_per_artifact, unit="image") as step:
        export_onnx(job.student, path, job.preprocessing["input_size"], job.options.opset)
        set_metadata(path, list(job.meta.class_names), job.preprocessing)
        if not batch_dim(path).isidentifier():
            raise RuntimeError(f"{FP32_FILE} has a fixed batch dimension ({batch_dim(path)})")
        run = ort_runner(path)
        pred = predict(run, job.eval_batches, step)
        par = parity(pred, job.reference, job.options.parity_images)
        if not parity_ok(par, job.reference, FP32_TOLERANCE):
            raise UserError(f"ONNX parity check failed: {FP32_FILE} differs from PyTorch (max |logit diff| "
                            f"{par.max_abs_logit_diff:.3g}, top-1 agreement {par.top1_agreement:.3f}); "
                            f"the bundle was not written — report this with the checkpoint's arch")
        verdict = job.verdict(run, pred, step)
        step.note(f"parity with PyTorch: max |logit diff| {par.max_abs_logit_diff:.2e}, top-1 agreement "
                  f"{par.top1_agreement:.3f}")
    return Built((job.entry(FP32_FILE, "onnx", "fp32", "any", accuracy_entry(pred, job.reference),
                            budget=verdict, parity=par, measured_on=ort_measured_on()),))


BACKEND = Backend(name="onnx", order=0, build=build, always=True,
                  help="model.onnx (FP32, dynamic batch): always written, every other artifact derives from it")
