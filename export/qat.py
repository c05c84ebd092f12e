"""Quantization-aware training: fine-tune a checkpoint's INT8 graphs toward its FP32 student.

    python -m export.qat runs/x/best.pt [--epochs 10]           -> runs/x/qat/ (two INT8 graphs, qat.json)
    python -m export runs/x/best.pt --int8 --qat runs/x/qat     -> a bundle whose INT8 needs no calibration

For each INT8 flavour of the bundle (U8S8 for onnxruntime, symmetric S8S8 for TensorRT): the
post-training graph (``export.int8``'s first recipe, all nodes INT8) sets the placement and the
starting ranges; ``export.qat_graph.QDQGraph`` runs that graph in torch with fake quantization and
fine-tunes its weights and activation scales on the training split. The target is the FP32
student's own output (the function the export is judged against):

    L = KL(softmax(z_fp32) || softmax(z_int8))          (batch mean; z: (B, C) logits)

After every epoch the trained values go back into the graph and onnxruntime scores it on the
validation split plus a seeded sample of training images as they are (not flipped or shifted); the
epoch closest to FP32 there (mean KL, which moves smoothly where a few images move top-1 by whole
points) is kept, epoch 0 (the post-training graph) included. The target needs no labels, so
training images are fair judges of fidelity, and 60 validation images alone chose badly: on
EfficientNet-Lite0 (Fashion-MNIST, 30 per class) they picked the epoch furthest from FP32 in
top-1 on 10,000 test images (+0.83 points), where adding 240 training images picks the one closest
in KL (-0.01). ``qat.json`` records the FP32, post-training and QAT top-1 there, per epoch, with
the checkpoint's hash so export refuses graphs of another checkpoint.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from export.bundle import _temp_prefix, remove_stale
from export.evaluation import (CACHE_LIMIT_BYTES, REFERENCE_SEMANTICS, ImageBatches, Predictions, accuracy_entry,
                               ort_runner, predict, torch_runner)
from export.int8 import CPU, TENSORRT, Flavour, quantize, verify_int8
from export.int8_graph import BatchReader, calibration_sample, preprocess
from export.int8_ladder import Recipe
from export.int8_safety import u8s8_saturation
from export.onnx_fp32 import FP32_FILE, export_onnx
from export.options import CALIBRATION_METHODS
from export.qat_graph import QDQGraph
from formats.datasets import ConcatSource, DatasetSplits, SubsetSource
from formats.errors import UserError
from formats.files import read_json_object, sha256_file, utc_now, write_json

QAT_FILE = "qat.json"
QAT_SCHEMA = "vl2lite-edge/qat"
FLAVOURS = (CPU, TENSORRT)


@dataclass(frozen=True)
class QatSettings:
    epochs: int = 10  # passes over the training split (the epoch closest to FP32 on validation is kept)
    lr: float = 1e-5  # Adam learning rate of the weights and biases (cosine decay to 0)
    scale_lr: float = 1e-4  # Adam learning rate of the activation scales (cosine decay to 0)
    batch_size: int = 32  # training and evaluation batch size
    calib_images: int = 300  # training images that set the starting ranges (post-training calibration)
    calib_method: str = "minmax"  # calibration of the starting ranges: minmax | entropy | percentile
    select_train_images: int = 500  # training images (as they are, seeded sample) judging the epochs with validation
    data_root: str | None = None  # where the dataset lives, if not where training found it
    seed: int = 0  # image order and calibration sample
    out: Path | None = None  # output folder (default: qat/ beside the checkpoint)
    overwrite: bool = False  # replace an existing output folder

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.calib_images < 1:
            raise UserError("--epochs, --batch-size and --calib-images must be >= 1")
        if self.select_train_images < 0:
            raise UserError(f"--select-train-images must be >= 0 (got {self.select_train_images})")
        if not (self.lr >= 0 and self.scale_lr >= 0 and self.lr + self.scale_lr > 0):
            raise UserError(f"--lr and --scale-lr must be >= 0, not both 0 (got {self.lr}, {self.scale_lr})")
        if self.calib_method not in CALIBRATION_METHODS:
            raise UserError(f"--calib-method must be one of {', '.join(CALIBRATION_METHODS)} (got {self.calib_method!r})")


def distillation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(softmax(target) || softmax(logits)), batch mean; (B, C), (B, C) -> ()."""
    return torch.nn.functional.kl_div(torch.log_softmax(logits, dim=1), torch.log_softmax(target, dim=1),
                                      reduction="batchmean", log_target=True)


def quantization_aware_training(checkpoint: Path, settings: QatSettings) -> Path:
    """Write ``<out>/model.int8.onnx``, ``<out>/model.int8.trt.onnx`` and ``<out>/qat.json``; returns ``out``."""
    from export.api import training_splits
    from students.checkpoint import load_student
    from students.registry import deployable

    checkpoint = Path(checkpoint)
    out = Path(settings.out) if settings.out is not None else checkpoint.resolve().parent / "qat"
    _check_out(out, settings.overwrite)
    student, meta = load_student(checkpoint)
    student = deployable(student, meta.input_size)
    splits = training_splits(meta, settings.data_root)
    if len(splits.train) < settings.batch_size:
        raise UserError(f"only {len(splits.train)} training images: quantization-aware training needs at least "
                        f"one batch (--batch-size {settings.batch_size})")
    pre = meta.preprocessing.to_dict()
    select, report = _scorings(student, splits, pre, settings)
    train = TrainImages(splits, pre, settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)  # what a killed run to the same folder left
    work = Path(tempfile.mkdtemp(prefix=_temp_prefix(out, "partial"), dir=out.parent))
    try:
        export_onnx(student, work / FP32_FILE, list(meta.input_size), 17)
        preprocess(work / FP32_FILE, work / "preprocessed.onnx")
        reader = BatchReader("input", calibration_sample(splits.train, pre, min(settings.calib_images, len(splits.train)),
                                                         settings.seed, settings.batch_size))
        flavours = {f.file: train_flavour(f, work, student, train, select, report, reader, settings) for f in FLAVOURS}
        for name in (FP32_FILE, "preprocessed.onnx"):
            (work / name).unlink()
        write_json(work / QAT_FILE, {
            "schema": QAT_SCHEMA, "created": utc_now(),
            "source_checkpoint": {"file": checkpoint.name, "sha256": sha256_file(checkpoint)},
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()},
            "selected_on": {"split": select.split, "images": select.batches.images,
                            "fp32_top1": round(select.reference.accuracy(), 6)},
            "training_images": len(train.x), "flavours": flavours})
        _publish(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def _scorings(student: torch.nn.Module, splits: DatasetSplits, pre: dict, s: QatSettings) -> tuple[Scoring, Scoring]:
    """Where the epoch is chosen (validation plus a sample of training images; test when there are
    neither, said in qat.json) and where post-training and QAT are compared for the record (test,
    else the selection images)."""
    def scoring(split: str, source) -> Scoring:
        batches = ImageBatches(source, pre, s.batch_size)
        return Scoring(split, batches, predict(torch_runner(student), batches))

    parts = [("val", splits.val)] if len(splits.val) > 0 else []
    if s.select_train_images > 0 and len(splits.train) > 0:
        order = np.random.default_rng([s.seed, 1]).permutation(len(splits.train))[:s.select_train_images]
        parts.append(("train", SubsetSource(splits.train, sorted(order.tolist()))))
    if not parts:
        print("WARNING: no validation split and no training images for choosing the QAT epoch: it is chosen on "
              "the test split", flush=True)
        test = scoring("test", splits.test)
        return test, test
    select = scoring("+".join(name for name, _ in parts), ConcatSource([source for _, source in parts]))
    return select, (scoring("test", splits.test) if len(splits.test) > 0 else select)


class TrainImages:
    """The training split through the evaluation transform, decoded once, in a new order each epoch,
    each batch flipped (half of its images) and shifted: the target is the FP32 student's output on
    the same input, so any nearby input teaches, and a small split goes further."""

    def __init__(self, splits: DatasetSplits, pre: dict, s: QatSettings) -> None:
        h, w = pre["input_size"]
        fits = max(s.batch_size, CACHE_LIMIT_BYTES // (3 * h * w * 4))
        source = splits.train
        if len(source) > fits:  # decoded once and held in memory: a seeded sample of what fits in 1 GiB
            print(f"quantization-aware training uses {fits} of the {len(source)} training images (what fits in "
                  f"{CACHE_LIMIT_BYTES >> 30} GiB decoded)", flush=True)
            source = SubsetSource(source, sorted(np.random.default_rng(s.seed).permutation(len(source))[:fits].tolist()))
        self.x = np.concatenate([x for x, _ in ImageBatches(source, pre, s.batch_size)])  # (N, 3, H, W)
        self.batch_size, self.seed = s.batch_size, s.seed

    @property
    def batches_per_epoch(self) -> int:
        return len(self.x) // self.batch_size

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]:
        rng = np.random.default_rng([self.seed, epoch])  # the order, flips and shifts of this epoch
        order = rng.permutation(len(self.x))
        for start in range(0, len(order) - self.batch_size + 1, self.batch_size):  # full batches only
            yield augment(torch.from_numpy(self.x[order[start:start + self.batch_size]]), rng)  # (B, 3, H, W)


def augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, H, W): a random half mirrored, the batch shifted by up to 1/8 of its size."""
    h, w = x.shape[-2:]
    flip = torch.from_numpy(rng.random(len(x)) < 0.5)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    pad = max(1, min(h, w) // 8)
    dy, dx = rng.integers(0, 2 * pad + 1, size=2)
    return F.pad(x, (pad, pad, pad, pad), mode="reflect")[..., dy:dy + h, dx:dx + w]


@dataclass(frozen=True)
class Scoring:
    """A split's evaluation batches and the FP32 student's predictions on them."""

    split: str
    batches: ImageBatches
    reference: Predictions


def train_flavour(flavour: Flavour, work: Path, student: torch.nn.Module, train: TrainImages, select: Scoring,
                  report: Scoring, reader: BatchReader, s: QatSettings) -> dict[str, Any]:
    """Post-training graph, then epochs of QAT; the graph closest to FP32 on ``select`` lands at
    ``work/flavour.file``; the post-training and chosen graphs are both scored on ``report``."""
    start = time.perf_counter()
    ptq = work / f"ptq-{flavour.target}.onnx"
    quantize(work / "preprocessed.onnx", ptq, flavour, Recipe(s.calib_method, sum(len(b) for b in reader.batches)),
             reader)
    qdq = onnx.load(str(ptq))
    graph = QDQGraph(qdq, onnx.load(str(work / "preprocessed.onnx")), weight_qmax=flavour.weight_qmax)
    fidelity = check_fidelity(graph, ptq, select.batches, fused=flavour.fused)
    rows = [{"epoch": 0, **_scored(ptq, select, flavour), "loss": None}]
    _log(flavour, rows[-1])
    best = work / flavour.file
    shutil.copyfile(ptq, best)
    opt = torch.optim.Adam([{"params": graph.weights(), "lr": s.lr}, {"params": graph.scales(), "lr": s.scale_lr}])
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, s.epochs * train.batches_per_epoch)  # to 0 at the end
    for epoch in range(1, s.epochs + 1):
        losses = []
        for x in train.epoch(epoch):
            with torch.no_grad():
                target = student(x)  # (B, C)
            loss = distillation_loss(graph(x), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            decay.step()
            losses.append(loss.item())
        candidate = work / f"epoch-{flavour.target}.onnx"
        onnx.save(graph.write_back(qdq), str(candidate))
        rows.append({"epoch": epoch, **_scored(candidate, select, flavour), "loss": round(float(np.mean(losses)), 6)})
        _log(flavour, rows[-1])
        if rows[-1]["kl"] < min(r["kl"] for r in rows[:-1]):
            candidate.replace(best)
    (work / f"epoch-{flavour.target}.onnx").unlink(missing_ok=True)  # the last epoch, when it was not the best
    chosen = min(rows, key=lambda r: r["kl"])
    compared = {"split": report.split, "images": report.batches.images,
                "fp32_top1": round(report.reference.accuracy(), 6),
                "ptq": _figures(_scored(ptq, report, flavour)), "qat": _figures(_scored(best, report, flavour))}
    ptq.unlink()
    return {"target": flavour.target, "torch_vs_onnxruntime": fidelity, "chosen_epoch": chosen["epoch"],
            "epochs": rows, "ptq_vs_qat": compared,
            "graph": verify_int8(best, flavour), "sha256": sha256_file(best),
            "seconds": round(time.perf_counter() - start, 1)}


MIN_FIDELITY = 0.95  # the torch graph must pick onnxruntime's top-1 on this share of the selection images


def check_fidelity(graph: QDQGraph, path: Path, batches: ImageBatches, images: int = 256,
                   fused: bool = True) -> dict[str, Any]:
    """Top-1 agreement of the torch graph with onnxruntime on the same Q/DQ graph, before any training;
    one clear error where the torch side does not reproduce it (training it would train something else).

    ``fused``: against onnxruntime as the runtime runs it (the CPU graph: its fused integer kernels
    are the deployment); otherwise against the graph's reference Q/DQ semantics (onnxruntime with
    graph optimisations off): the TensorRT graph is deployed by TensorRT, which builds its engine from
    those semantics, and onnxruntime's fused S8S8 CPU kernels only emulate it.
    """
    run, sim, ort, seen = ort_runner(path, optimize=fused), [], [], 0
    with torch.no_grad():
        for x, _ in batches:
            sim.append(graph(torch.from_numpy(x)).numpy())  # (B, C)
            ort.append(run(x))
            seen += len(x)
            if seen >= images:
                break
    sim_logits, ort_logits = np.concatenate(sim), np.concatenate(ort)  # (N, C) each
    agreement = float((sim_logits.argmax(1) == ort_logits.argmax(1)).mean()) if np.isfinite(sim_logits).all() else 0.0
    against = "onnxruntime-cpu" if fused else REFERENCE_SEMANTICS
    if agreement < MIN_FIDELITY:
        raise UserError(f"quantization-aware training cannot reproduce this student's INT8 graph in torch (top-1 "
                        f"agreement with {against} {agreement:.3f} on {seen} images, needs {MIN_FIDELITY}): "
                        f"export with post-training INT8 (--int8 without --qat)")
    return {"agreement": round(agreement, 6), "against": against, "images": seen}


def _scored(path: Path, on: Scoring, flavour: Flavour) -> dict[str, float]:
    """The flavour's top-1, drop and agreement vs FP32 on ``on`` (scored as ``export`` scores it), and ``kl``: the mean
    KL(FP32 || INT8) per image, the criterion that chooses the epoch (a few validation images
    move top-1 by whole points; the KL moves smoothly)."""
    pred = predict(flavour.runner(path), on.batches)
    kl = distillation_loss(torch.from_numpy(pred.logits), torch.from_numpy(on.reference.logits))
    return {**accuracy_entry(pred, on.reference), "kl": round(float(kl), 6)}


def _figures(row: dict[str, Any]) -> dict[str, float]:
    return {k: row[k] for k in ("top1", "top1_drop", "top1_drop_ci95", "agreement", "kl")}


def _log(flavour: Flavour, row: dict[str, Any]) -> None:
    what = "post-training" if row["epoch"] == 0 else f"QAT epoch {row['epoch']} (loss {row['loss']:.4f})"
    print(f"qat {flavour.target}: {what}: top-1 {100 * row['top1']:.2f}% (drop {row['top1_drop']:+.2f} pts vs FP32, "
          f"agreement {row['agreement']:.3f}, KL to FP32 {row['kl']:.4f})", flush=True)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists: pass --overwrite to replace it, or choose another --out")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / QAT_FILE).is_file())):
        raise UserError(f"--overwrite replaces QAT folders only, and {out} is not one (no {QAT_FILE}): "
                        f"choose another --out")


def _publish(work: Path, out: Path) -> None:
    """Rename the finished folder into place (the old one, with --overwrite, goes only after)."""
    os.chmod(work, 0o755)  # mkdtemp makes 0700
    if not out.exists():
        work.replace(out)
        return
    old = Path(tempfile.mkdtemp(prefix=_temp_prefix(out, "old"), dir=out.parent))
    out.replace(old / out.name)  # both renames on one filesystem: each is atomic
    work.replace(out)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------- what export reads

@dataclass(frozen=True)
class QatGraphs:
    """A checked QAT folder: its graphs belong to the checkpoint being exported."""

    folder: Path
    record: dict[str, Any]

    def graph(self, flavour: Flavour) -> Path:
        return self.folder / flavour.file

    def figures(self, flavour: Flavour) -> dict[str, Any]:
        return self.record["flavours"][flavour.file]


def read_qat(folder: str | Path, checkpoint: Path) -> QatGraphs:
    """The QAT folder for ``checkpoint``, checked before any export work."""
    folder = Path(folder)
    fix = f"run `python -m export.qat {checkpoint}` to write it"
    if not (folder / QAT_FILE).is_file():
        raise UserError(f"--qat {folder}: no {QAT_FILE} there: {fix}")
    record = read_json_object(folder / QAT_FILE, fix)
    if record.get("schema") != QAT_SCHEMA or not isinstance(record.get("flavours"), dict):
        raise UserError(f"--qat {folder}: {QAT_FILE} is not a QAT record of this tool: {fix}")
    if record.get("source_checkpoint", {}).get("sha256") != sha256_file(checkpoint):
        raise UserError(f"--qat {folder} was trained from another checkpoint than {checkpoint}: {fix}")
    for flavour in FLAVOURS:
        entry = record["flavours"].get(flavour.file)
        path = folder / flavour.file
        if not isinstance(entry, dict) or not path.is_file() or sha256_file(path) != entry.get("sha256"):
            raise UserError(f"--qat {folder}: {flavour.file} is missing or does not match {QAT_FILE}: {fix}")
        if flavour.reduce_range and not u8s8_saturation(path)["safe_on_every_x86"]:
            raise UserError(f"--qat {folder}: {flavour.file} has 8-bit weights whose int16 pair sums can saturate on x86 "
                            f"CPUs without VNNI (trained by an older version): {fix} again (7-bit weights)")
    return QatGraphs(folder, record)


# ---------------------------------------------------------------------------- command line

def cli(argv: list[str] | None = None) -> None:
    """``python -m export.qat <checkpoint> [options]``: arguments checked before any work; errors exit 2."""
    import sys

    from formats.cli import Positional, parser_for, settings_from
    from formats.errors import run_cli

    parser = parser_for("python -m export.qat", "Fine-tune the INT8 graphs of a checkpoint with fake quantization "
                        "toward its FP32 student (for when post-training INT8 misses the accuracy budget); writes "
                        "<out>/model.int8.onnx, model.int8.trt.onnx and qat.json. Then: python -m export "
                        "<checkpoint> --int8 --qat <out> (no calibration). See docs/export.md.", QatSettings,
                        [Positional("checkpoint", "the best.pt written by python -m distill")])
    args = parser.parse_args(argv)
    out = run_cli(lambda: quantization_aware_training(Path(args.checkpoint), settings_from(QatSettings, args)))
    print(out)
    print(f"export them with: python -m export {args.checkpoint} --int8 --qat {out}", file=sys.stderr)


if __name__ == "__main__":
    cli()
