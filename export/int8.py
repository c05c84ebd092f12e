"""Calibrated INT8: the registered ``int8`` backend, its two flavours, quantization and verification.

Static Q/DQ quantization held to an accuracy budget, with a remedy ladder (``export.int8_ladder``)
fed by calibration batches and graph analysis (``export.int8_graph``).

Two flavours from one calibration: U8S8 (uint8 activations, int8 weights) for onnxruntime on
CPUs, where only that combination hits the fast integer kernels, and symmetric S8S8 for TensorRT,
which accepts only signed symmetric Q/DQ. Precision lives in the graph, so TensorRT 10 and 11 both
build INT8 engines from ``model.int8.trt.onnx`` without calibrators.

The CPU flavour's weights are 7-bit ([-64, 64], onnxruntime's ``reduce_range``) so that one graph
computes the same logits on every x86 CPU: without VNNI (AVX2, AVX-512 without VNNI) onnxruntime's
U8S8 kernels sum pairs of u8·s8 products in int16 (VPMADDUBSW), and 255·127·2 = 64,770 saturates
where 255·64·2 = 32,640 cannot. On VNNI and AMX CPUs the kernels are the same either way (same
speed, ``benchmarks/int8_isa.py``). ``export.int8_safety`` checks every written graph for it.
"""
from __future__ import annotations

import contextlib
import hashlib
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from export.backends import BudgetError, ExportJob, log, register_backend
from export.evaluation import REFERENCE_SEMANTICS, Runner, accuracy_entry, ort_measured_on, ort_runner, predict
from export.int8_graph import (BatchReader, calibration_sample, edge_nodes, preprocess, rank_sensitive, shape_nodes,
                               weighted_nodes)
from export.int8_ladder import Attempt, Recipe, chosen, format_table, run_ladder
from export.int8_safety import INT16_MAX, u8s8_saturation
from export.onnx_fp32 import FP32_FILE, check_self_contained, set_metadata
from export.options import RECOMMENDED_CALIBRATION_IMAGES, ExportOptions
from formats.errors import UserError

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}


@dataclass(frozen=True)
class Flavour:
    file: str
    target: str
    activations: QuantType
    extra_options: dict
    evaluated_with: str
    fused: bool  # scored by onnxruntime with its graph optimisations (fused integer kernels) or without
    weight_qmax: int  # weights are integers in [-weight_qmax, weight_qmax]

    def runner(self, path: Path) -> Runner:
        """How this flavour's graphs are scored here: as their runtime computes them."""
        return ort_runner(path, optimize=self.fused)

    @property
    def reduce_range(self) -> bool:
        """7-bit weights: onnxruntime's ``reduce_range`` quantizes them to [-64, 64]."""
        return self.weight_qmax == REDUCED_WEIGHT_QMAX


REDUCED_WEIGHT_QMAX = 64  # 255 * 64 * 2 = 32,640 <= 32,767: an int16 pair sum of u8·s8 products cannot saturate

# onnxruntime is this graph's runtime: scored as it runs it, fused integer kernels included.
CPU = Flavour("model.int8.onnx", "onnxruntime-cpu", QuantType.QUInt8, {}, "onnxruntime-cpu", fused=True,
              weight_qmax=REDUCED_WEIGHT_QMAX)
# TensorRT takes INT8 Q/DQ on activations and weights only; biases stay float (no INT32 DequantizeLinear).
# No TensorRT here: scored by the graph's Q/DQ reference semantics, which TensorRT builds its engine
# from, not by onnxruntime's fused S8S8 CPU kernels, which differ from them (10% of top-1 on MobileNetV3).
TENSORRT = Flavour("model.int8.trt.onnx", "tensorrt", QuantType.QInt8,
                   {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
                   REFERENCE_SEMANTICS, fused=False, weight_qmax=127)


def check_calibration_count(available: int, options: ExportOptions) -> int:
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


# --------------------------------------------------------------------------- quantization and verification

def quantize(pre: Path, dst: Path, flavour: Flavour, recipe: Recipe, reader: BatchReader) -> None:
    reader.rewind()
    keep_float = list(recipe.excluded) + shape_nodes(onnx.load(str(pre)).graph)  # shape arithmetic stays exact
    with contextlib.redirect_stdout(sys.stderr):  # the calibrator print()s progress; stdout is the bundle path
        quantize_static(str(pre), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=flavour.activations, weight_type=QuantType.QInt8,
                        calibrate_method=METHODS[recipe.method], nodes_to_exclude=keep_float,
                        reduce_range=flavour.reduce_range, extra_options=dict(flavour.extra_options))


def verify_int8(path: Path, flavour: Flavour, excluded: tuple[str, ...] = ()) -> dict[str, Any]:
    """Count what makes the file INT8; raise if it is not (it must never be labelled INT8 otherwise).

    Checked: Q and DQ nodes exist; every weighted op but the ``excluded`` ones (kept in float on
    purpose) reads its weight through a DequantizeLinear of an INT8 initializer; activation zero
    points have the flavour's type; for TensorRT no DequantizeLinear reads an INT32 tensor (a
    quantized bias, which TensorRT does not accept); for U8S8 no op can saturate an int16 pair sum
    on any x86 CPU (``export.int8_safety``; recorded as ``saturation``).
    """
    model = onnx.load(str(path))
    g = model.graph
    ops = [n.op_type for n in g.node]
    init = {t.name: t.data_type for t in g.initializer}
    dq_of = {n.output[0]: n for n in g.node if n.op_type == "DequantizeLinear"}
    zp_types = {init.get(n.input[2]) for n in g.node if n.op_type == "QuantizeLinear" and len(n.input) > 2}
    want = onnx.TensorProto.UINT8 if flavour.activations == QuantType.QUInt8 else onnx.TensorProto.INT8
    weighted = weighted_nodes(g)
    int8_weighted = sum(1 for n in weighted if n.input[1] in dq_of
                        and init.get(dq_of[n.input[1]].input[0]) == onnx.TensorProto.INT8)
    int32_dq = sum(1 for n in dq_of.values() if init.get(n.input[0]) == onnx.TensorProto.INT32)
    counts = {"quantize_linear": ops.count("QuantizeLinear"), "dequantize_linear": ops.count("DequantizeLinear"),
              "int8_initializers": sum(1 for t in init.values() if t == onnx.TensorProto.INT8),
              "int8_weighted_ops": int8_weighted, "weighted_ops": len(weighted), "int32_dequantize": int32_dq}
    problems = []
    if counts["quantize_linear"] == 0 or counts["dequantize_linear"] == 0 or int8_weighted == 0:
        problems.append("no INT8 weights behind DequantizeLinear")
    elif int8_weighted != len(weighted) - len(set(excluded)):
        problems.append(f"{int8_weighted} of {len(weighted)} weighted ops read INT8 weights, "
                        f"{len(weighted) - len(set(excluded))} expected")
    if zp_types != {want}:
        problems.append(f"activation zero points {sorted(map(str, zp_types))}, expected {want}")
    if flavour is TENSORRT and int32_dq:
        problems.append(f"{int32_dq} INT32 DequantizeLinear (quantized biases)")
    if flavour.activations == QuantType.QUInt8:  # U8S8: the same logits on every x86 CPU, or no INT8 label
        counts["saturation"] = u8s8_saturation(path)
        if not counts["saturation"]["safe_on_every_x86"]:
            problems.append(f"{counts['saturation']['ops_over_limit']} U8S8 ops whose int16 pair sums can saturate on "
                            f"x86 CPUs without VNNI (worst {counts['saturation']['worst_pair_sum']} > {INT16_MAX})")
    if problems:
        raise RuntimeError(f"{path.name} is not an INT8 Q/DQ graph for {flavour.target} ({'; '.join(problems)}; "
                           f"{counts}); refusing to label it INT8")
    return counts


def log_saturation(flavour: Flavour, counts: dict[str, Any]) -> None:
    if "saturation" in counts:
        sat = counts["saturation"]
        log(f"int8 {flavour.target}: {sat['u8s8_ops']} U8S8 ops with weights in [-{flavour.weight_qmax}, "
            f"{flavour.weight_qmax}]: worst int16 pair sum {sat['worst_pair_sum']:,} <= {sat['limit']:,}, the same "
            f"integer sums on every x86 CPU (VNNI or not)")


# --------------------------------------------------------------------------- the backend

class Int8Quantizer:
    """Runs the ladder for one flavour against real evaluation images."""

    def __init__(self, job: ExportJob, pre: Path, work: Path, calib: dict[int, BatchReader]) -> None:
        self.job, self.pre, self.work, self.calib = job, pre, work, calib

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
        path = self.candidate(flavour, recipe)
        quantize(self.pre, path, flavour, recipe, self.reader(recipe.images))
        judged = self.job.judged_on()
        acc = accuracy_entry(predict(flavour.runner(path), judged.batches), judged.reference)
        ok = self.job.budget.verdict(judged.split, judged.batches.images, acc["top1_drop"],
                                     acc["agreement"])["within_budget"]  # the one rule
        log(f"int8 {flavour.target}: {recipe.method}, {recipe.images} images, {len(recipe.excluded)} in float: "
            f"{judged.split} top-1 {100 * acc['top1']:.2f}% (drop {acc['top1_drop']:+.2f} pts) -> "
            f"{'ok' if ok else 'over budget'}")
        return Attempt(recipe, acc["top1"], acc["top1_drop"], acc["agreement"], ok)

    def sensitive(self, flavour: Flavour, recipe: Recipe) -> list[str]:
        path = self.candidate(flavour, recipe)
        return rank_sensitive(self.pre, path, self.reader(min(recipe.images, 2 * self.job.options.batch_size)), self.work)

    def ladder(self, flavour: Flavour, first: Recipe, available: int) -> list[Attempt]:
        o = self.job.options
        edges = edge_nodes(onnx.load(str(self.pre)))
        return run_ladder(lambda r: self.attempt(flavour, r), first, available, edges,
                          lambda r: self.sensitive(flavour, r), o.max_excluded, o.remedies)


class OnnxInt8:
    name = "int8"

    def wanted(self, options: ExportOptions) -> bool:
        return options.int8

    def build(self, job: ExportJob) -> list[dict[str, Any]]:
        if job.qat is not None:  # trained by python -m export.qat: nothing to calibrate
            return [self.publish_trained(job, flavour) for flavour in (CPU, TENSORRT)]
        o = job.options
        available, images = len(job.calibration_source), job.calibration_images
        with tempfile.TemporaryDirectory(prefix="int8-", dir=job.dir) as tmp:
            work = Path(tmp)
            pre = work / "preprocessed.onnx"
            preprocess(job.dir / FP32_FILE, pre)
            quantizer = Int8Quantizer(job, pre, work, {})
            entries, first = [], Recipe(o.calib_method, images)
            for flavour in (CPU, TENSORRT):
                attempts = quantizer.ladder(flavour, first, available)
                if not attempts[-1].within_budget and not o.best_effort:  # fail now: the rest is wasted work
                    table = format_table(attempts, o.max_top1_drop, job.judged_on().split, o.min_agreement)
                    agreement = f", min agreement {o.min_agreement:g}" if o.min_agreement else ""
                    raise BudgetError(f"no INT8 recipe for {flavour.file} met the accuracy budget "
                                      f"(max top-1 drop {o.max_top1_drop:g} points{agreement}) after "
                                      f"{len(attempts)} attempts; raise --max-top1-drop, add --calib-images, "
                                      f"train the INT8 graphs (python -m export.qat <checkpoint>, then export "
                                      f"with --qat), export without --int8, or pass --best-effort to keep the "
                                      f"best one marked",
                                      table)
                entries.append(self.publish(job, quantizer, flavour, attempts))
                first = chosen(attempts).recipe  # the TensorRT flavour starts from the CPU winner
        return entries

    def publish(self, job: ExportJob, q: Int8Quantizer, flavour: Flavour, attempts: list[Attempt]) -> dict[str, Any]:
        win = chosen(attempts)
        path = job.dir / flavour.file
        q.candidate(flavour, win.recipe).replace(path)
        set_metadata(path, list(job.meta.class_names), job.preprocessing)
        check_self_contained(path)
        counts = verify_int8(path, flavour, win.recipe.excluded)
        log_saturation(flavour, counts)
        final = self.final_accuracy(job, path, flavour)
        quant = {"method": win.recipe.method, "calibration_images": win.recipe.images, "calibration_split": "train",
                 "excluded_nodes": list(win.recipe.excluded), "attempts": [a.row() for a in attempts],
                 "remedies_needed": len(attempts) - 1}
        return self.entry(job, flavour, counts, quant, win.row(), final)

    def publish_trained(self, job: ExportJob, flavour: Flavour) -> dict[str, Any]:
        """A graph trained by ``python -m export.qat``: copied, checked and scored like a calibrated one."""
        path = job.dir / flavour.file
        shutil.copyfile(job.qat.graph(flavour), path)
        set_metadata(path, list(job.meta.class_names), job.preprocessing)
        counts = verify_int8(path, flavour)
        log_saturation(flavour, counts)
        judged = job.judged_on()
        chosen_on = accuracy_entry(predict(flavour.runner(path), judged.batches), judged.reference)
        final = chosen_on if job.held_out is None else \
            accuracy_entry(predict(flavour.runner(path), job.eval_batches), job.reference)
        record = job.qat.figures(flavour)
        log(f"int8 {flavour.target}: quantization-aware trained ({job.qat.folder}, epoch {record['chosen_epoch']}): "
            f"{job.options.eval_split} top-1 {100 * final['top1']:.2f}% (drop {final['top1_drop']:+.2f} pts; "
            f"post-training INT8 lost {record['ptq_vs_qat']['ptq']['top1_drop']:+.2f} on {record['ptq_vs_qat']['split']})")
        quant = {"method": "qat", "calibration_images": 0, "excluded_nodes": [], "remedies_needed": 0,
                 "qat": {"folder": str(job.qat.folder), "chosen_epoch": record["chosen_epoch"],
                         "epochs": len(record["epochs"]) - 1, "selected_on": job.qat.record["selected_on"],
                         "ptq_vs_qat": record["ptq_vs_qat"]}}
        return self.entry(job, flavour, counts, quant, chosen_on, final)

    @staticmethod
    def entry(job: ExportJob, flavour: Flavour, counts: dict[str, Any], recipe: dict[str, Any],
              chosen_on: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
        """The manifest entry: the recipe, the figures where it was chosen (and its budget verdict), the final ones."""
        judged = job.judged_on()
        selection = {"split": judged.split, "images": judged.batches.images,
                     **{k: chosen_on[k] for k in ("top1", "top1_drop", "agreement")}}
        quant = {"activations": "uint8" if flavour.activations == QuantType.QUInt8 else "int8", "weights": "int8",
                 "weight_range": [-flavour.weight_qmax, flavour.weight_qmax],
                 "per_channel": True, "format": "qdq", "symmetric": flavour is TENSORRT, **recipe,
                 "graph": counts, "selected_on": selection}
        verdict = job.budget.verdict(judged.split, judged.batches.images, chosen_on["top1_drop"], chosen_on["agreement"])
        return {"file": flavour.file, "format": "onnx", "precision": "int8", "target": flavour.target,
                "quantization": quant, **final, "budget": verdict, "evaluated_with": flavour.evaluated_with,
                "measured_on": ort_measured_on(flavour.fused)}

    @staticmethod
    def final_accuracy(job: ExportJob, path: Path, flavour: Flavour) -> dict[str, Any]:
        """The chosen model on the evaluation split: the figure the manifest reports.

        The budget chose the recipe on the validation split and its verdict stays the one from
        there (``budget``); judging again on test would make the test split a selection criterion.
        """
        acc = accuracy_entry(predict(flavour.runner(path), job.eval_batches), job.reference)
        if job.held_out is None:  # chosen on the evaluation split itself: the attempt's figures, with their interval
            return acc
        log(f"int8 {flavour.target}: on {job.options.eval_split}: top-1 {100 * acc['top1']:.2f}% "
            f"(drop {acc['top1_drop']:+.2f} ± {acc['top1_drop_ci95']:.2f} pts, agreement {acc['agreement']:.3f})")
        return acc


register_backend(OnnxInt8())
