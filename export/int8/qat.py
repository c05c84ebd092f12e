"""Quantization-aware training: fine-tune a checkpoint's INT8 graphs toward its FP32 student.

    python -m export.qat runs/x/best.pt [--epochs 10]           -> runs/x/qat/ (two INT8 graphs, qat.json)
    python -m export runs/x/best.pt --int8 --qat runs/x/qat     -> a bundle whose INT8 needs no calibration

For each INT8 flavour of the bundle (U8S8 for onnxruntime, symmetric S8S8 for TensorRT): the
post-training graph (``export.int8.ptq``'s first recipe, all nodes INT8) sets the placement and the
starting ranges; ``export.int8.qat_graph.QDQGraph`` runs that graph in torch with fake quantization and
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
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from export.bundle import QAT_FOLDER, check_target, publish, staging
from export.data import training_splits
from export.evaluation import REFERENCE_SEMANTICS, ImageBatches, accuracy_entry, ort_runner, predict, torch_runner
from export.int8.flavours import FLAVOURS, Flavour, quantize, verify_int8
from export.int8.graph import BatchReader, calibration_sample, preprocess
from export.int8.ladder import Recipe
from export.int8.qat_graph import QDQGraph
from export.int8.qat_images import TrainImages
from export.job import Selection, log
from export.onnx_file import FP32_FILE, export_onnx
from export.quiet import library_output
from export.settings import QatSettings
from formats.datasets import ConcatSource, DatasetSplits, SubsetSource
from formats.errors import UserError
from formats.files import sha256_file, utc_now
from formats.manifest import SourceCheckpoint
from formats.progress import Step, stage
from formats.qat import QAT_SCHEMA, QAT_SCHEMA_VERSION, EpochRow, Fidelity, QatFlavour, QatRecord
from formats.quantization import PtqVsQat, QatFigures, QatSelection

MIN_FIDELITY = 0.95  # the torch graph must pick onnxruntime's top-1 on this share of the selection images
FIDELITY_IMAGES = 256  # ... of the first this many


def distillation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(softmax(target) || softmax(logits)), batch mean; (B, C), (B, C) -> ()."""
    return torch.nn.functional.kl_div(torch.log_softmax(logits, dim=1), torch.log_softmax(target, dim=1),
                                      reduction="batchmean", log_target=True)


def quantization_aware_training(checkpoint: Path, settings: QatSettings) -> Path:
    """Write ``<out>/model.int8.onnx``, ``<out>/model.int8.trt.onnx`` and ``<out>/qat.json``; returns ``out``."""
    checkpoint = Path(checkpoint)
    out = Path(settings.out) if settings.out is not None else checkpoint.resolve().parent / "qat"
    check_target(out, settings.overwrite, checkpoint, QAT_FOLDER)  # before any work
    with library_output(shown=settings.verbose):  # onnxruntime's and torch.onnx's own output: --verbose only
        return _train(checkpoint, out, settings)


def _train(checkpoint: Path, out: Path, settings: QatSettings) -> Path:
    from students.checkpoint import load_student
    from students.registry import deployable

    student, meta = load_student(checkpoint)
    student = deployable(student, meta.input_size)
    splits = training_splits(meta, settings.data_root)
    if len(splits.train) < settings.batch_size:
        raise UserError(f"only {len(splits.train)} training images: quantization-aware training needs at least "
                        f"one batch (--batch-size {settings.batch_size})")
    pre = meta.preprocessing.to_dict()
    select, report = _selections(student, splits, pre, settings)
    train = TrainImages(splits, pre, settings)
    with staging(out, settings.overwrite, keep=checkpoint, kind=QAT_FOLDER) as work:
        calib = min(settings.calib_images, len(splits.train))
        with stage("qat: FP32 graph and calibration images", total=calib, unit="image") as step:
            export_onnx(student, work / FP32_FILE, list(meta.input_size), 17)
            preprocess(work / FP32_FILE, work / "preprocessed.onnx")
            reader = BatchReader("input", calibration_sample(splits.train, pre, calib, settings.seed,
                                                             settings.batch_size, step))
        flavours = tuple(train_flavour(f, work, student, train, select, report, reader, settings) for f in FLAVOURS)
        for name in (FP32_FILE, "preprocessed.onnx"):
            (work / name).unlink()
        record = QatRecord(
            schema=QAT_SCHEMA, schema_version=QAT_SCHEMA_VERSION, created=utc_now(),
            source_checkpoint=SourceCheckpoint(checkpoint.name, sha256_file(checkpoint)),
            settings={k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()},
            selected_on=QatSelection(select.split, select.batches.images, round(select.reference.accuracy(), 6)),
            training_images=len(train.x), flavours=flavours)
        publish(work, out, record.to_dict(), settings.overwrite, keep=checkpoint, kind=QAT_FOLDER)
    log(f"QAT folder written: {out} ({', '.join(f'{f.file}: epoch {f.chosen_epoch}' for f in flavours)})")
    return out


def _selections(student: torch.nn.Module, splits: DatasetSplits, pre: dict, s: QatSettings) -> tuple[Selection, Selection]:
    """Where the epoch is chosen (validation plus a sample of training images; test when there are
    neither, said in qat.json) and where post-training and QAT are compared for the record (test,
    else the selection images)."""
    def selection(split: str, source) -> Selection:
        batches = ImageBatches(source, pre, s.batch_size)
        return Selection(split, batches, predict(torch_runner(student), batches, step))

    parts = [("val", splits.val)] if len(splits.val) > 0 else []
    if s.select_train_images > 0 and len(splits.train) > 0:
        order = np.random.default_rng([s.seed, 1]).permutation(len(splits.train))[:s.select_train_images]
        parts.append(("train", SubsetSource(splits.train, sorted(order.tolist()))))
    if not parts:
        log("WARNING: no validation split and no training images for choosing the QAT epoch: it is chosen on "
            "the test split")
        with stage("qat: pytorch reference", total=len(splits.test), unit="image") as step:
            test = selection("test", splits.test)
        return test, test
    chosen_on = ConcatSource([source for _, source in parts])
    with stage("qat: pytorch reference", total=len(chosen_on) + len(splits.test), unit="image") as step:
        select = selection("+".join(name for name, _ in parts), chosen_on)
        return select, (selection("test", splits.test) if len(splits.test) > 0 else select)


def train_flavour(flavour: Flavour, work: Path, student: torch.nn.Module, train: TrainImages, select: Selection,
                  report: Selection, reader: BatchReader, s: QatSettings) -> QatFlavour:
    """Post-training graph, then epochs of QAT; the graph closest to FP32 on ``select`` lands at
    ``work/flavour.file``; the post-training and chosen graphs are both scored on ``report``."""
    start = time.perf_counter()
    ptq, best = work / f"ptq-{flavour.target}.onnx", work / flavour.file
    fidelity_images = min(FIDELITY_IMAGES, select.batches.images)
    with stage(f"qat {flavour.file}: post-training graph", unit="image",
               total=reader.images + fidelity_images + select.batches.images) as step:
        quantize(work / "preprocessed.onnx", ptq, flavour, Recipe(s.calib_method, reader.images), reader, step)
        qdq = onnx.load(str(ptq))
        graph = QDQGraph(qdq, onnx.load(str(work / "preprocessed.onnx")), weight_qmax=flavour.weight_qmax)
        fidelity = check_fidelity(graph, ptq, select.batches, fused=flavour.fused)
        step.advance(fidelity_images)
        rows = [_epoch_row(0, _scored(ptq, select, flavour, step), None)]
        step.note(_row_text(rows[-1], select.split))
    shutil.copyfile(ptq, best)
    opt = torch.optim.Adam([{"params": graph.weights(), "lr": s.lr}, {"params": graph.scales(), "lr": s.scale_lr}])
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, s.epochs * train.batches_per_epoch)  # to 0 at the end
    per_epoch = train.batches_per_epoch * train.batch_size + select.batches.images
    with stage(f"qat {flavour.file}: {s.epochs} epochs", total=s.epochs * per_epoch, unit="image") as step:
        for epoch in range(1, s.epochs + 1):
            loss = _train_epoch(graph, student, train, epoch, opt, decay, step)
            candidate = work / f"epoch-{flavour.target}.onnx"
            onnx.save(graph.write_back(qdq), str(candidate))
            rows.append(_epoch_row(epoch, _scored(candidate, select, flavour, step), loss))
            step.note(_row_text(rows[-1], select.split))
            if rows[-1].kl < min(r.kl for r in rows[:-1]):
                candidate.replace(best)
    (work / f"epoch-{flavour.target}.onnx").unlink(missing_ok=True)  # the last epoch, when it was not the best
    with stage(f"qat {flavour.file}: post-training vs QAT on {report.split}", total=2 * report.batches.images,
               unit="image") as step:
        compared = PtqVsQat(report.split, report.batches.images, round(report.reference.accuracy(), 6),
                            _scored(ptq, report, flavour, step), _scored(best, report, flavour, step))
        step.note(f"chosen epoch {min(rows, key=lambda r: r.kl).epoch} (closest to FP32 on {select.split}): top-1 "
                  f"{100 * compared.qat.top1:.2f}% (drop {compared.qat.top1_drop:+.2f} pts); post-training "
                  f"{100 * compared.ptq.top1:.2f}% (drop {compared.ptq.top1_drop:+.2f} pts)")
    ptq.unlink()
    return QatFlavour(file=flavour.file, target=flavour.target, torch_vs_onnxruntime=fidelity,
                      chosen_epoch=min(rows, key=lambda r: r.kl).epoch, epochs=tuple(rows), ptq_vs_qat=compared,
                      graph=verify_int8(best, flavour), sha256=sha256_file(best),
                      seconds=round(time.perf_counter() - start, 1))


def _train_epoch(graph: QDQGraph, student: torch.nn.Module, train: TrainImages, epoch: int,
                 opt: torch.optim.Optimizer, decay: torch.optim.lr_scheduler.LRScheduler, step: Step) -> float:
    """One pass over the training images toward the FP32 student's logits (``step`` advances by each
    batch); the mean loss."""
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
        step.advance(len(x))
    return round(float(np.mean(losses)), 6)


def check_fidelity(graph: QDQGraph, path: Path, batches: ImageBatches, images: int = FIDELITY_IMAGES,
                   fused: bool = True) -> Fidelity:
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
    return Fidelity(round(agreement, 6), against, seen)


def _scored(path: Path, on: Selection, flavour: Flavour, step: Step | None = None) -> QatFigures:
    """The flavour's top-1, drop and agreement vs FP32 on ``on`` (scored as ``export`` scores it), and ``kl``: the mean
    KL(FP32 || INT8) per image, the criterion that chooses the epoch (a few validation images
    move top-1 by whole points; the KL moves smoothly)."""
    pred = predict(flavour.runner(path), on.batches, step)
    kl = distillation_loss(torch.from_numpy(pred.logits), torch.from_numpy(on.reference.logits))
    acc = accuracy_entry(pred, on.reference)
    return QatFigures(acc["top1"], acc["top1_drop"], acc["top1_drop_ci95"], acc["agreement"], round(float(kl), 6))


def _epoch_row(epoch: int, figures: QatFigures, loss: float | None) -> EpochRow:
    return EpochRow(epoch, figures.top1, figures.top1_drop, figures.top1_drop_ci95, figures.agreement, figures.kl, loss)


def _row_text(row: EpochRow, split: str) -> str:
    what = "" if row.epoch == 0 else f"epoch {row.epoch} (loss {row.loss:.4f}): "
    return (f"{what}{split} top-1 {100 * row.top1:.2f}% (drop {row.top1_drop:+.2f} pts vs FP32, "
            f"agreement {row.agreement:.3f}, KL to FP32 {row.kl:.4f})")
