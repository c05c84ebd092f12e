"""``bench --data``: each artifact's top-1 drop measured here, set beside the manifest's.

``--data`` need not be the export's evaluation images, so the *drop* is compared, against the
bundle's FP32 ONNX model on the same images, each with its paired 95% interval (formats.paired);
an artifact whose two drops are further apart than both intervals together is flagged.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from formats.bench import BenchRow, DropHere, Recorded
from formats.bundle import Artifact, Bundle
from formats.isa import UNKNOWN, describe, this_cpu
from formats.paired import paired_drop

Predictions = tuple[int, ...]  # each --data image's predicted class, from the worker
Measured = tuple[BenchRow, Predictions | None]  # a row and, with --data, its predictions


def recorded(art: Artifact) -> Recorded:
    """The manifest's figures of ``art`` (on the export's reference split) and where they were measured."""
    where = None if art.measured_on is None else {k: str(v) for k, v in art.measured_on.items()}
    return Recorded(art.top1, art.top1_drop, art.top1_drop_ci95, where)


def fp32_artifact(bundle: Bundle) -> Artifact | None:
    """The bundle's FP32 ONNX model (``model.onnx``): the yardstick of every drop measured here."""
    return next((a for a in bundle.artifacts if a.precision == "fp32" and a.format == "onnx"), None)


def reference_row(measured: list[Measured], file: str) -> tuple[BenchRow, Predictions] | None:
    """The measured row of ``file`` with predictions, the CPU one first (any provider runs FP32 alike)."""
    ran = [(row, preds) for row, preds in measured if row.artifact == file and preds is not None]
    return min(ran, key=lambda rp: rp[0].backend != "onnxruntime-cpu", default=None)  # type: ignore[return-value]


def drop_here(art: Artifact, preds: np.ndarray, ref: np.ndarray, labels: np.ndarray) -> tuple[DropHere, bool | None]:
    """The drop on --data against ``ref``, and whether it differs from the manifest's (None: not judged)."""
    drop, ci = paired_drop(ref == labels, preds == labels)
    here = DropHere(round(drop, 3), round(ci, 3), int(len(labels)), this_cpu()["isa"])
    if art.top1_drop_ci95 is None or art.top1_drop is None:  # a bundle written before intervals
        return here, None
    return here, bool(abs(drop - art.top1_drop) > art.top1_drop_ci95 + ci)


def compare_with_manifest(bundle: Bundle, measured: list[Measured], labels: np.ndarray,
                          ref: tuple[str, np.ndarray] | None) -> list[BenchRow]:
    """Every row of a bundle artifact with a top-1 on --data gains ``recorded``, ``here`` and ``differs``
    (None: the yardstick itself, or no yardstick); ``ref`` is (what it is, FP32 predictions) or None.
    The per-image predictions stay behind: bench.json keeps the figures only."""
    files = {a.file for a in bundle.artifacts}
    rows = []
    for row, preds in measured:
        if preds is None or row.artifact not in files:
            rows.append(row)
            continue
        art = bundle.artifact(row.artifact)
        here, differs = None, None
        if ref is not None and ref[0] != row.label:
            here, differs = drop_here(art, np.asarray(preds), ref[1], labels)
        rows.append(dataclasses.replace(row, recorded=recorded(art), here=here, differs=differs))
    return rows


def _figure(drop: float | None, ci: float | None) -> str:
    """'1.25 ± 2.43'; '-' when absent."""
    if drop is None:
        return "-"
    return f"{drop:.2f}" + ("" if ci is None else f" ± {ci:.2f}")


def comparison_line(row: BenchRow) -> str | None:
    """One line per compared row: both drops and the verdict; where each was measured when they differ."""
    rec, here = row.recorded, row.here
    if here is None or rec is None:
        return None  # the FP32 yardstick itself
    mine, theirs = _figure(here.top1_drop, here.top1_drop_ci95), _figure(rec.top1_drop, rec.top1_drop_ci95)
    if row.differs:
        here_on = describe({**this_cpu(), "engine": row.backend})
        return (f"  DIFFERS {row.label}: {mine} here on {here_on}; {theirs} recorded on "
                f"{describe(rec.measured_on)}: re-measure on this device before trusting the manifest's top-1")
    unknown = f" (measured on: {UNKNOWN})" if rec.measured_on is None else ""
    verdict = "within both intervals" if row.differs is False else "not judged (no interval recorded)"
    return f"  {row.label}: {mine} here, {theirs} recorded{unknown}: {verdict}"


def format_comparison(rows: tuple[BenchRow, ...], reference: str | None, missing: str = "") -> str:
    """The section under the bench table: per compared artifact its drop here beside the manifest's;
    one that differs beyond both intervals is flagged with where each figure was measured."""
    judged = [r for r in rows if r.recorded is not None]
    if not judged:
        return ""
    if reference is None:
        return f"top-1 drop on --data not compared with the export's: {missing}"
    head = f"top-1 drop on --data against the FP32 {reference}, beside the export's (points, 95% interval):"
    return "\n".join([head] + [line for line in map(comparison_line, judged) if line])
