"""Post-training INT8 against real images: the remedy ladder per flavour, and the manifest entries.

Each flavour starts from the requested recipe and climbs the ladder (``export.int8.ladder``) until
a recipe meets the accuracy budget on the judged split; the TensorRT flavour starts from the CPU
winner. A graph trained by ``python -m export.qat`` is published instead, checked and scored the same way.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import onnx

from export.budget import BudgetError
from export.evaluation import accuracy_entry, ort_measured_on, predict
from export.int8.flavours import FLAVOURS, Flavour, log_saturation, quantize, verify_int8
from export.int8.graph import BatchReader, calibration_sample, edge_nodes, preprocess, rank_sensitive
from export.int8.ladder import Attempt, Recipe, chosen, chosen_line, describe, format_table, run_ladder
from export.int8.qat_folder import QatGraphs
from export.job import ExportJob, log
from export.onnx_file import FP32_FILE, check_self_contained, set_metadata
from export.settings import RECOMMENDED_CALIBRATION_IMAGES, ExportSettings
from formats.accuracy import Selected
from formats.errors import UserError
from formats.manifest import ArtifactEntry
from formats.progress import stage
from formats.quantization import GraphCounts, Quantization, QatSummary

Figures = dict[str, float]  # export.evaluation.accuracy_entry: top1, top1_drop, top1_drop_ci95, agreement


def check_calibration_count(available: int, options: ExportSettings) -> int:
    """How many calibration images to use; an error below the minimum, a warning below 300."""
    if available < options.min_calib_images:
        raise UserError(f"only {available} training images available for INT8 calibration, at least "
                        f"{options.min_calib_images} are needed: point --data-root at the full dataset "
                        f"or lower --min-calib-images")
    used = min(available, options.calib_images)
    if used < RECOMMENDED_CALIBRATION_IMAGES:
        log(f"WARNING: INT8 calibration uses only {used} images (fewer than "
            f"{RECOMMENDED_CALIBRATION_IMAGES}); activation ranges may be under-sampled")
    return used


class Int8Quantizer:
    """Runs the ladder for one flavour against real evaluation images, each attempt a progress stage."""

    def __init__(self, job: ExportJob, pre: Path, work: Path) -> None:
        self.job, self.pre, self.work = job, pre, work
        self.calib: dict[int, BatchReader] = {}  # calibration images -> their batches, drawn once
        self.tried: dict[str, int] = {}  # flavour file -> attempts so far

    def reader(self, images: int) -> BatchReader:
        if images not in self.calib:
            o = self.job.options
            batches = calibration_sample(self.job.calibration_source, self.job.preprocessing, images, o.seed, o.batch_size)
            self.calib[images] = BatchReader("input", batches)
        return self.calib[images]

    def candidate(self, flavour: Flavour, recipe: Recipe) -> Path:
        tag = hashlib.sha1(repr(recipe).encode()).hexdigest()[:10]  # one file per distinct recipe
        return self.work / f"{flavour.target}-{tag}.onnx"

    def attempt(self, flavour: Flavour, recipe: Recipe) -> Attempt:
        """Calibrate (``recipe.images``), then judge (the judged split): one stage, with its verdict as a note."""
        path = self.candidate(flavour, recipe)
        judged = self.job.judged_on()
        self.tried[flavour.file] = number = self.tried.get(flavour.file, 0) + 1
        with stage(f"{flavour.file} attempt {number}: {describe(recipe)}", total=recipe.images + judged.batches.images,
                   unit="image") as step:
            quantize(self.pre, path, flavour, recipe, self.reader(recipe.images), step)
            acc = accuracy_entry(predict(flavour.runner(path), judged.batches, step), judged.reference)
            ok = self.job.budget.verdict(judged.split, judged.batches.images, acc["top1_drop"],
                                         acc["agreement"]).within_budget  # the one rule
            step.note(f"{judged.split} top-1 {100 * acc['top1']:.2f}% (drop {acc['top1_drop']:+.2f} pts, agreement "
                      f"{acc['agreement']:.3f}): {'within budget' if ok else 'over budget'}")
        return Attempt(recipe, acc["top1"], acc["top1_drop"], acc["agreement"], ok)

    def sensitive(self, flavour: Flavour, recipe: Recipe) -> list[str]:
        path = self.candidate(flavour, recipe)
        reader = self.reader(min(recipe.images, 2 * self.job.options.batch_size))
        with stage(f"{flavour.file}: ranking layers by quantization error", total=2 * reader.images,
                   unit="image") as step:
            return rank_sensitive(self.pre, path, reader, self.work, step)

    def ladder(self, flavour: Flavour, first: Recipe, available: int) -> list[Attempt]:
        o = self.job.options
        edges = edge_nodes(onnx.load(str(self.pre)))
        return run_ladder(lambda r: self.attempt(flavour, r), first, available, edges,
                          lambda r: self.sensitive(flavour, r), o.max_excluded, o.remedies)


def calibrated(job: ExportJob) -> list[ArtifactEntry]:
    """Both flavours, calibrated on the training split; a flavour no recipe fits is a BudgetError
    (unless --best-effort), raised at once: the other flavour's work would be wasted. The table of
    each flavour's attempts is printed, with the one its graph is."""
    o = job.options
    available = len(job.calibration_source)
    with tempfile.TemporaryDirectory(prefix="int8-", dir=job.dir) as tmp:
        work = Path(tmp)
        pre = work / "preprocessed.onnx"
        with stage(f"{FP32_FILE}: shape inference and graph optimisation for quantization"):
            preprocess(job.dir / FP32_FILE, pre)
        quantizer = Int8Quantizer(job, pre, work)
        entries, first = [], Recipe(o.calib_method, min(available, o.calib_images))
        for flavour in FLAVOURS:
            attempts = quantizer.ladder(flavour, first, available)
            if not attempts[-1].within_budget and not o.best_effort:
                raise _no_recipe(job, flavour, attempts)
            log(f"{_table(job, flavour, attempts)}\n{chosen_line(attempts, flavour.file)}")
            entries.append(_publish(job, quantizer, flavour, attempts))
            first = chosen(attempts).recipe  # the TensorRT flavour starts from the CPU winner
    return entries


def _table(job: ExportJob, flavour: Flavour, attempts: list[Attempt]) -> str:
    o = job.options
    return format_table(attempts, o.max_top1_drop, job.judged_on().split, o.min_agreement, flavour.file)


def _no_recipe(job: ExportJob, flavour: Flavour, attempts: list[Attempt]) -> BudgetError:
    o = job.options
    table = _table(job, flavour, attempts)
    agreement = f", min agreement {o.min_agreement:g}" if o.min_agreement else ""
    return BudgetError(f"no INT8 recipe for {flavour.file} met the accuracy budget (max top-1 drop "
                       f"{o.max_top1_drop:g} points{agreement}) after {len(attempts)} attempts; raise --max-top1-drop, "
                       f"add --calib-images, train the INT8 graphs (python -m export.qat <checkpoint>, then export "
                       f"with --qat), export without --int8, or pass --best-effort to keep the best one marked", table)


def _publish(job: ExportJob, q: Int8Quantizer, flavour: Flavour, attempts: list[Attempt]) -> ArtifactEntry:
    win = chosen(attempts)
    path = job.dir / flavour.file
    q.candidate(flavour, win.recipe).replace(path)
    set_metadata(path, list(job.meta.class_names), job.preprocessing)
    check_self_contained(path)
    counts = verify_int8(path, flavour, win.recipe.excluded)
    log_saturation(flavour, counts)
    chosen_on = {"top1": win.top1, "top1_drop": win.top1_drop, "agreement": win.agreement}
    selected = _selected(job, chosen_on)
    quant = Quantization(
        activations=flavour.activation_type, weights="int8", per_channel=True, format="qdq",
        symmetric=flavour.symmetric, method=win.recipe.method, calibration_images=win.recipe.images,
        excluded_nodes=win.recipe.excluded, remedies_needed=len(attempts) - 1, graph=counts,
        calibration_split="train", attempts=tuple(a.row() for a in attempts), selected_on=selected,
        weight_range=(-flavour.weight_qmax, flavour.weight_qmax))
    return _entry(job, flavour, quant, selected, final_accuracy(job, path, flavour))


def trained(job: ExportJob, graphs: QatGraphs) -> list[ArtifactEntry]:
    """Both flavours as ``python -m export.qat`` trained them: copied, checked and scored like calibrated ones."""
    return [_publish_trained(job, graphs, flavour) for flavour in FLAVOURS]


def _publish_trained(job: ExportJob, graphs: QatGraphs, flavour: Flavour) -> ArtifactEntry:
    path = job.dir / flavour.file
    shutil.copyfile(graphs.graph(flavour), path)
    set_metadata(path, list(job.meta.class_names), job.preprocessing)
    counts = verify_int8(path, flavour)
    log_saturation(flavour, counts)
    judged, record = job.judged_on(), graphs.record.flavour(flavour.file)
    with stage(f"{flavour.file} (quantization-aware trained)", total=job.images_per_artifact, unit="image") as step:
        chosen_on = accuracy_entry(predict(flavour.runner(path), judged.batches, step), judged.reference)
        final = chosen_on if job.held_out is None else \
            accuracy_entry(predict(flavour.runner(path), job.eval_batches, step), job.reference)
        step.note(f"{graphs.folder}, epoch {record.chosen_epoch}: {job.options.eval_split} {_figures(final)}; "
                  f"post-training INT8 lost {record.ptq_vs_qat.ptq.top1_drop:+.2f} pts on {record.ptq_vs_qat.split}")
    summary = QatSummary(folder=str(graphs.folder), chosen_epoch=record.chosen_epoch, epochs=len(record.epochs) - 1,
                         selected_on=graphs.record.selected_on, ptq_vs_qat=record.ptq_vs_qat)
    selected = _selected(job, chosen_on)
    quant = _trained_quantization(flavour, counts, summary, selected)
    return _entry(job, flavour, quant, selected, final)


def _trained_quantization(flavour: Flavour, counts: GraphCounts, summary: QatSummary, selected: Selected) -> Quantization:
    return Quantization(
        activations=flavour.activation_type, weights="int8", per_channel=True, format="qdq",
        symmetric=flavour.symmetric, method="qat", calibration_images=0, excluded_nodes=(), remedies_needed=0,
        graph=counts, qat=summary, selected_on=selected, weight_range=(-flavour.weight_qmax, flavour.weight_qmax))


def _selected(job: ExportJob, chosen_on: Figures) -> Selected:
    judged = job.judged_on()
    return Selected(judged.split, judged.batches.images, chosen_on["top1"], chosen_on["top1_drop"], chosen_on["agreement"])


def _entry(job: ExportJob, flavour: Flavour, quant: Quantization, selected: Selected, final: Figures) -> ArtifactEntry:
    """The manifest entry: the recipe, the figures where it was chosen (and its budget verdict), the final ones."""
    verdict = job.budget.verdict(selected.split, selected.images, selected.top1_drop, selected.agreement)
    return job.entry(flavour.file, "onnx", "int8", flavour.target, final, budget=verdict, quantization=quant,
                     evaluated_with=flavour.evaluated_with, measured_on=ort_measured_on(flavour.fused))


def final_accuracy(job: ExportJob, path: Path, flavour: Flavour) -> Figures:
    """The chosen model on the evaluation split: the figure the manifest reports.

    The budget chose the recipe on the validation split and its verdict stays the one from
    there (``budget``); judging again on test would make the test split a selection criterion.
    """
    with stage(f"{flavour.file} on {job.options.eval_split}", total=job.eval_batches.images, unit="image") as step:
        acc = accuracy_entry(predict(flavour.runner(path), job.eval_batches, step), job.reference)
        step.note(_figures(acc))
    return acc


def _figures(acc: Figures) -> str:
    return (f"top-1 {100 * acc['top1']:.2f}% (drop {acc['top1_drop']:+.2f} ± {acc['top1_drop_ci95']:.2f} pts, "
            f"agreement {acc['agreement']:.3f})")
