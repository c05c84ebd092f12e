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
from distill.checkpoint import load_student
from distill.config import DataConfig, from_dict
from distill.data import DatasetSplits, load_dataset
from distill.errors import UserError
from export.backends import ExportJob, Selection, get_backend, list_backends, log
from export.bundle import SCHEMA, SCHEMA_VERSION, publish, sha256_file, staging, utc_now, write_json
from export.evaluation import ImageBatches, predict, torch_runner
from export.int8 import check_calibration_count
from export.onnx_fp32 import INPUT, OUTPUT
from export.options import ExportOptions
from export.triton import write_repository

BACKEND_ORDER = ("onnx", "fp16", "int8", "tensorrt")


def export_bundle(checkpoint: Path, out: Path, options: ExportOptions) -> Path:
    """Export ``checkpoint`` (a distill best.pt) into the bundle folder ``out``; returns ``out``.

    Nothing appears at ``out`` unless every requested artifact passed its checks.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    student, ckpt = load_student(checkpoint)
    splits = load_splits(ckpt, options.data_root)
    calib = check_calibration_count(len(splits.train), options) if options.int8 else 0
    with staging(out, options.overwrite, keep=checkpoint) as tmp:
        job = make_job(options, tmp, student, ckpt, splits, calib)
        write_sidecars(tmp, ckpt)
        artifacts = []
        for name in BACKEND_ORDER:
            backend = get_backend(name)
            if backend.wanted(options):
                artifacts += backend.build(job)
        for art in artifacts:
            art.update(sha256=sha256_file(tmp / art["file"]), size_bytes=(tmp / art["file"]).stat().st_size)
        name = options.name or out.name
        manifest = build_manifest(name, checkpoint, ckpt, job, artifacts)
        if options.triton:
            h, w = ckpt["preprocessing"]["input_size"]
            manifest["triton"] = {"repository": "triton", "models": write_repository(
                tmp, name, artifacts, [3, h, w], ckpt["num_classes"], options.max_batch, options.triton_queue_delay_us)}
        publish(tmp, out, manifest, options.overwrite, keep=checkpoint)
    log(f"bundle written: {out}")
    return out


def load_splits(ckpt: dict[str, Any], data_root: str | None) -> DatasetSplits:
    """The dataset the student was trained on (same split seed), optionally at another root."""
    data_cfg = from_dict(DataConfig, ckpt["config"]["data"])
    if data_root is not None:
        data_cfg = dataclasses.replace(data_cfg, root=str(data_root))
    try:
        splits = load_dataset(data_cfg)
    except UserError as exc:
        raise UserError(f"{exc} (export reads the training dataset for calibration and evaluation; "
                        f"pass --data-root if it moved)") from None
    if splits.class_names != ckpt["class_names"]:
        raise UserError(f"the dataset at {data_cfg.root} has different classes than the checkpoint: "
                        f"pass --data-root pointing at the dataset the student was trained on")
    return splits


def make_job(options: ExportOptions, tmp: Path, student: torch.nn.Module, ckpt: dict[str, Any],
             splits: DatasetSplits, calib: int) -> ExportJob:
    source = splits.test if options.eval_split == "test" else splits.val
    batches = ImageBatches(source, ckpt["preprocessing"], options.batch_size, options.eval_images)
    reference = predict(torch_runner(student), batches)
    log(f"pytorch reference: top-1 {100 * reference.accuracy():.2f}% on {batches.images} "
        f"{options.eval_split} images")
    job = ExportJob(options, tmp, student, ckpt, batches, reference, splits.train, calib)
    if options.int8 and options.eval_split == "test" and len(splits.val) > 0:
        val = ImageBatches(splits.val, ckpt["preprocessing"], options.batch_size, options.eval_images)
        job.held_out = Selection("val", val, predict(torch_runner(student), val))
        log(f"int8 recipes are chosen on {val.images} val images, then reported on test")
    return job


def write_sidecars(folder: Path, ckpt: dict[str, Any]) -> None:
    (folder / "labels.txt").write_text("".join(f"{name}\n" for name in ckpt["class_names"]))
    write_json(folder / "preprocessing.json", ckpt["preprocessing"])


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "torch": str(torch.__version__), "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__, "export": export.__version__}
    try:
        import onnxconverter_common
        versions["onnxconverter_common"] = onnxconverter_common.__version__
    except ImportError:
        pass
    return versions


def build_manifest(name: str, checkpoint: Path, ckpt: dict[str, Any], job: ExportJob,
                   artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    h, w = ckpt["preprocessing"]["input_size"]
    o = job.options
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": utc_now(),
        "name": name, "arch": ckpt["arch"], "num_classes": ckpt["num_classes"],
        "input": {"name": INPUT, "shape": [-1, 3, h, w], "dtype": "float32"},
        "output": {"name": OUTPUT, "shape": [-1, ckpt["num_classes"]], "dtype": "float32"},
        "max_batch": o.max_batch, "batch": {"min": o.min_batch, "opt": o.opt_batch, "max": o.max_batch},
        "source_checkpoint": {"file": checkpoint.name, "sha256": sha256_file(checkpoint), "epoch": ckpt["epoch"]},
        "labels": "labels.txt", "preprocessing": "preprocessing.json",
        "reference": {"framework": "pytorch", "top1": round(job.reference.accuracy(), 6),
                      "split": o.eval_split, "images": job.eval_batches.images},
        "budget": {"max_top1_drop": o.max_top1_drop, "min_agreement": o.min_agreement},
        "artifacts": artifacts,
        **job.notes,
        "versions": tool_versions(),
        "options": json.loads(json.dumps(dataclasses.asdict(o))),
    }


__all__ = ["export_bundle", "ExportOptions", "list_backends"]
