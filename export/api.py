"""``export_bundle``: checkpoint in, complete bundle folder out (or an error and no bundle)."""
from __future__ import annotations

import dataclasses
import json
import platform
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch

import export
import export.fp16  # noqa: F401  (each module registers its backend, in bundle order)
import export.int8  # noqa: F401
import export.onnx_fp32  # noqa: F401
import export.tensorrt  # noqa: F401
from export.backends import ExportJob, Selection, enforce_budget, get_backend, list_backends, log
from export.bundle import publish, staging
from export.evaluation import ImageBatches, jpeg_draft_parity, predict, torch_runner
from export.int8 import check_calibration_count
from export.onnx_fp32 import INPUT, OUTPUT
from export.options import ExportOptions
from export.qat import read_qat
from export.triton import write_repository
from formats.bundle import write_labels
from formats.checkpoint import StudentMeta
from formats.datasets import DatasetSplits, load_splits
from formats.errors import UserError
from formats.files import sha256_file, utc_now, write_json
from formats.manifest import SCHEMA, SCHEMA_VERSION, ArtifactEntry, Manifest, typed
from formats.preprocessing import DraftParity
from students.checkpoint import load_student
from students.registry import deployable

BACKEND_ORDER = ("onnx", "fp16", "int8", "tensorrt")


def export_bundle(checkpoint: Path, out: Path, options: ExportOptions) -> Path:
    """Export ``checkpoint`` (a distill best.pt) into the bundle folder ``out``; returns ``out``.

    Nothing appears at ``out`` unless every requested artifact passed its checks.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    check_tensorrt(options)
    student, meta = load_student(checkpoint)
    student = deployable(student, meta.input_size)  # branches fused, padding fixed: the graph users run
    splits = training_splits(meta, options.data_root)
    qat = read_qat(options.qat, checkpoint) if options.qat else None
    calib = check_calibration_count(len(splits.train), options) if options.int8 and qat is None else 0
    with staging(out, options.overwrite, keep=checkpoint) as tmp:
        job = make_job(options, tmp, student, meta, splits, calib)
        job.qat = qat
        write_sidecars(tmp, meta, measure_draft(job, splits))
        artifacts = []
        for name in BACKEND_ORDER:
            backend = get_backend(name)
            if backend.wanted(options):
                built = backend.build(job)
                enforce_budget(built, options)  # a miss stops here: the later backends' work would be wasted
                artifacts += built
        for art in artifacts:
            art.update(sha256=sha256_file(tmp / art["file"]), size_bytes=(tmp / art["file"]).stat().st_size)
        name = options.name or out.name
        manifest = build_manifest(name, checkpoint, meta, job, artifacts)
        if options.triton:
            served = [a for a in artifacts if a["budget"]["within_budget"]]  # --best-effort misses stay out
            manifest["triton"] = {"repository": "triton", "models": write_repository(
                tmp, name, served, [3, *meta.input_size], meta.num_classes, options.max_batch,
                options.triton_queue_delay_us)}
        publish(tmp, out, manifest, options.overwrite, keep=checkpoint)
    log(f"bundle written: {out}")
    return out


def training_splits(meta: StudentMeta, data_root: str | None) -> DatasetSplits:
    """The dataset the student was trained on (same split seed), optionally at another root."""
    import torchvision.datasets

    spec = meta.dataset if data_root is None else dataclasses.replace(meta.dataset, root=str(data_root))
    try:
        splits = load_splits(spec, torchvision.datasets)
    except UserError as exc:
        raise UserError(f"{exc} (export reads the training dataset for calibration and evaluation; "
                        f"pass --data-root if it moved)") from None
    if tuple(splits.class_names) != meta.class_names:
        raise UserError(f"the dataset at {spec.root} has different classes than the checkpoint: "
                        f"pass --data-root pointing at the dataset the student was trained on")
    return splits


def make_job(options: ExportOptions, tmp: Path, student: torch.nn.Module, meta: StudentMeta,
             splits: DatasetSplits, calib: int) -> ExportJob:
    source = splits.test if options.eval_split == "test" else splits.val
    pre = meta.preprocessing.to_dict()
    batches = ImageBatches(source, pre, options.batch_size, options.eval_images)
    reference = predict(torch_runner(student), batches)
    log(f"pytorch reference: top-1 {100 * reference.accuracy():.2f}% on {batches.images} "
        f"{options.eval_split} images")
    job = ExportJob(options, tmp, student, meta, batches, reference, splits.train, calib)
    if options.eval_split == "test" and len(splits.val) > 0:
        val = ImageBatches(splits.val, pre, options.batch_size, options.eval_images)
        job.held_out = Selection("val", val, predict(torch_runner(student), val))
        log(f"the accuracy budget is judged on {val.images} val images (INT8 recipes are chosen there); "
            f"every artifact is reported on test")
    judged = job.judged_on()
    coarse = job.budget.coarseness(judged.split, judged.batches.images)
    if coarse:
        log(coarse)
    return job


def check_tensorrt(options: ExportOptions) -> None:
    """--trt needs TensorRT here; without it the export stops before any work, unless --best-effort."""
    from export.tensorrt import NOT_INSTALLED, tensorrt_version

    if options.trt and not options.best_effort and tensorrt_version() is None:
        raise UserError(f"--trt: {NOT_INSTALLED}: export on the device that has it, or pass --best-effort to "
                        f"write the bundle without engines (then build them on the device: python -m export <checkpoint> --trt)")


def measure_draft(job: ExportJob, splits: DatasetSplits) -> DraftParity:
    """JPEG draft decoding against exact decoding on the evaluation split (the runtime's default
    takes it only where this accepts it)."""
    o = job.options
    source = splits.test if o.eval_split == "test" else splits.val  # what job.reference predicted, exactly decoded
    draft = jpeg_draft_parity(source, job.meta.preprocessing, torch_runner(job.student), job.reference, o.batch_size)
    log(f"JPEG draft decoding: {draft.reason}")
    return draft


def write_sidecars(folder: Path, meta: StudentMeta, draft: DraftParity | None = None) -> None:
    write_labels(folder / "labels.txt", meta.class_names)  # names that cannot round-trip one per line: refused
    pre = dataclasses.replace(meta.preprocessing, jpeg_draft=draft)
    write_json(folder / "preprocessing.json", pre.to_dict())


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "torch": str(torch.__version__), "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__, "export": export.__version__}
    try:
        import onnxconverter_common
        versions["onnxconverter_common"] = onnxconverter_common.__version__
    except ImportError:
        pass
    return versions


def build_manifest(name: str, checkpoint: Path, meta: StudentMeta, job: ExportJob,
                   artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest as ``formats.manifest.Manifest`` (every field typed; a backend's typo is an error)."""
    h, w = meta.input_size
    o = job.options
    entries = tuple(typed(ArtifactEntry, art, f"artifact {art.get('file')}") for art in artifacts)
    manifest = Manifest(
        schema=SCHEMA, schema_version=SCHEMA_VERSION, created=utc_now(), name=name, arch=meta.arch,
        num_classes=meta.num_classes,
        input={"name": INPUT, "shape": [-1, 3, h, w], "dtype": "float32"},
        output={"name": OUTPUT, "shape": [-1, meta.num_classes], "dtype": "float32"},
        max_batch=o.max_batch, batch={"min": o.min_batch, "opt": o.opt_batch, "max": o.max_batch},
        source_checkpoint={"file": checkpoint.name, "sha256": sha256_file(checkpoint), "epoch": meta.epoch},
        labels="labels.txt", preprocessing="preprocessing.json",
        reference={"framework": "pytorch", "top1": round(job.reference.accuracy(), 6), "split": o.eval_split,
                   "images": job.eval_batches.images},
        budget={"max_top1_drop": o.max_top1_drop, "min_agreement": o.min_agreement},
        artifacts=entries, files={}, versions=tool_versions(),
        options=json.loads(json.dumps(dataclasses.asdict(o))), tensorrt=job.tensorrt)
    return manifest.to_dict()


__all__ = ["export_bundle", "ExportOptions", "list_backends"]
