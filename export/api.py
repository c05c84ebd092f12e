"""``export_bundle``: checkpoint in, complete bundle folder out (or an error and no bundle)."""
from __future__ import annotations

import dataclasses
import json
import platform
from pathlib import Path
from typing import Any, Mapping

import onnx
import onnxruntime
import torch

from export.budget import enforce_budget
from export.bundle import publish, staging
from export.data import training_splits
from export.evaluation import ImageBatches, jpeg_draft_parity, predict, torch_runner
from export.job import ExportJob, Selection, log
from export.onnx_file import INPUT, OUTPUT
from export.quiet import library_output
from export.registry import wanted_backends
from export.settings import ExportOptions
from export.version import __version__
from formats.bundle import file_hashes, write_labels
from formats.checkpoint import StudentMeta
from formats.datasets import DatasetSplits
from formats.files import sha256_file, utc_now, write_json
from formats.manifest import (SCHEMA, SCHEMA_VERSION, BatchLimits, Manifest, Reference, SourceCheckpoint,
                              TensorSpec)
from formats.preprocessing import DraftParity
from formats.progress import stage
from students.checkpoint import load_student
from students.registry import deployable


def export_bundle(checkpoint: Path, out: Path, options: ExportOptions) -> Path:
    """Export ``checkpoint`` (a distill best.pt) into the bundle folder ``out``; returns ``out``.

    The wanted backends (``export.registry``) run in their declared order, each artifact held to the
    accuracy budget as soon as it is built. Nothing appears at ``out`` unless every requested
    artifact passed its checks.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    with library_output(shown=options.verbose):  # onnxruntime's and torch.onnx's own output: --verbose only
        manifest = _export(checkpoint, out, options)
    log(summary(out, manifest))
    return out


def _export(checkpoint: Path, out: Path, options: ExportOptions) -> Manifest:
    backends = wanted_backends(options)
    student, meta = load_student(checkpoint)
    student = deployable(student, meta.input_size)  # branches fused, padding fixed: the graph users run
    splits = training_splits(meta, options.data_root)
    for backend in backends:
        if backend.check is not None:
            backend.check(options, checkpoint, splits)  # refused before any work: a missing tool, too few images
    with staging(out, options.overwrite, keep=checkpoint) as tmp:
        job = make_job(options, tmp, options.name or out.name, checkpoint, student, meta, splits)
        write_sidecars(tmp, meta, measure_draft(job, splits))
        fields: dict[str, Any] = {}
        for backend in backends:
            built = backend.build(job)
            enforce_budget(built.artifacts, options)  # a miss stops here: the later backends' work would be wasted
            job.artifacts.extend(built.artifacts)
            fields.update(built.manifest)
        manifest = build_manifest(job, fields)
        manifest = dataclasses.replace(manifest, files=file_hashes(tmp))
        publish(tmp, out, manifest.to_dict(), options.overwrite, keep=checkpoint)
    return manifest


def make_job(options: ExportOptions, tmp: Path, name: str, checkpoint: Path, student: torch.nn.Module,
             meta: StudentMeta, splits: DatasetSplits) -> ExportJob:
    source = splits.test if options.eval_split == "test" else splits.val
    pre = meta.preprocessing.to_dict()
    batches = ImageBatches(source, pre, options.batch_size, options.eval_images)
    held_out = options.eval_split == "test" and len(splits.val) > 0
    val = ImageBatches(splits.val, pre, options.batch_size, options.eval_images) if held_out else None
    with stage("pytorch reference", total=batches.images + (val.images if val else 0), unit="image") as step:
        reference = predict(torch_runner(student), batches, step)  # decodes the images too (kept for every artifact)
        step.note(f"top-1 {100 * reference.accuracy():.2f}% on {batches.images} {options.eval_split} images")
        job = ExportJob(options, tmp, name, checkpoint, student, meta, batches, reference, splits.train)
        if val is not None:
            job.held_out = Selection("val", val, predict(torch_runner(student), val, step))
    if val is not None:
        log(f"the accuracy budget is judged on {val.images} val images (INT8 recipes are chosen there); "
            f"every artifact is reported on test")
    judged = job.judged_on()
    coarse = job.budget.coarseness(judged.split, judged.batches.images)
    if coarse:
        log(coarse)
    return job


def measure_draft(job: ExportJob, splits: DatasetSplits) -> DraftParity:
    """JPEG draft decoding against exact decoding on the evaluation split (the runtime's default
    takes it only where this accepts it)."""
    o = job.options
    source = splits.test if o.eval_split == "test" else splits.val  # what job.reference predicted, exactly decoded
    draft = jpeg_draft_parity(source, job.meta.preprocessing, torch_runner(job.student), job.reference, o.batch_size)
    log(f"JPEG draft decoding: {draft.reason}")
    return draft


def summary(out: Path, manifest: Manifest) -> str:
    """What the bundle holds, one row per artifact (each precision's chosen file), and where it is."""
    ref = manifest.reference
    lines = [f"bundle written: {out}",
             f"| precision | artifact | runs on | {ref.split} top-1 | drop vs PyTorch (pts) | within budget |",
             "|---|---|---|---|---|---|",
             f"| pytorch | {manifest.source_checkpoint.file} | reference | {100 * ref.top1:.2f}% | - | - |"]
    for a in manifest.artifacts:
        within = {True: "yes", False: "no (kept: --best-effort)", None: "-"}[a.within_budget]
        lines.append(f"| {a.precision} | {a.file} | {a.target} | {100 * a.top1:.2f}% | {a.top1_drop:+.2f} | {within} |")
    lines.append(f"next: python -m runtime.bench {out} (latency on this device), python -m runtime.predict {out} IMAGE")
    return "\n".join(lines)


def write_sidecars(folder: Path, meta: StudentMeta, draft: DraftParity | None = None) -> None:
    write_labels(folder / "labels.txt", meta.class_names)  # names that cannot round-trip one per line: refused
    pre = dataclasses.replace(meta.preprocessing, jpeg_draft=draft)
    write_json(folder / "preprocessing.json", pre.to_dict())


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "torch": str(torch.__version__), "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__, "export": __version__}
    try:
        import onnxconverter_common
        versions["onnxconverter_common"] = onnxconverter_common.__version__
    except ImportError:
        pass
    return versions


def build_manifest(job: ExportJob, fields: Mapping[str, Any]) -> Manifest:
    """The manifest (``files`` still empty: the caller hashes the finished folder); ``fields`` are the
    top-level fields backends filled (``tensorrt``, ``triton``)."""
    h, w = job.meta.input_size
    o, meta = job.options, job.meta
    return Manifest(
        schema=SCHEMA, schema_version=SCHEMA_VERSION, created=utc_now(), name=job.name, arch=meta.arch,
        num_classes=meta.num_classes, input=TensorSpec(INPUT, (-1, 3, h, w), "float32"),
        output=TensorSpec(OUTPUT, (-1, meta.num_classes), "float32"), max_batch=o.max_batch,
        batch=BatchLimits(o.min_batch, o.opt_batch, o.max_batch),
        source_checkpoint=SourceCheckpoint(job.checkpoint.name, sha256_file(job.checkpoint), meta.epoch),
        labels="labels.txt", preprocessing="preprocessing.json",
        reference=Reference("pytorch", round(job.reference.accuracy(), 6), o.eval_split, job.eval_batches.images),
        budget=job.budget, artifacts=tuple(job.artifacts), files={}, versions=tool_versions(),
        options=json.loads(json.dumps(dataclasses.asdict(o))), **fields)
