"""Where an artifact's accuracy was measured, against where it runs now (``formats.isa``).

Two uses. At start, ``predict`` and ``serve`` print one line when an INT8 artifact's figures come
from a CPU of another integer-kernel class (or from nowhere recorded): the manifest's top-1 may
not hold here. ``bench --data`` re-measures the drop on this device and sets it beside the
manifest's: since ``--data`` need not be the export's evaluation images, it compares the *drop*
against the bundle's FP32 ONNX model on the same images, each with its paired 95% interval, and
flags an artifact whose two drops are further apart than both intervals together.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from formats.bundle import Artifact, Bundle
from formats.isa import UNKNOWN, describe, provenance_note, this_cpu
from formats.paired import paired_drop


def startup_note(art: Artifact) -> str | None:
    """The one line to print before serving ``art`` here, or None.

    Only the CPU INT8 graph: float kernels give the same top-1 on every CPU up to rounding, while
    onnxruntime picks its integer kernels by CPUID (formats.isa). The TensorRT graph and engines
    are computed by a GPU, and the sidecar check already refuses an engine built for another one."""
    if art.precision != "int8" or art.format != "onnx" or art.target != "onnxruntime-cpu":
        return None
    return provenance_note(art.file, art.measured_on)


def recorded(art: Artifact) -> dict[str, Any]:
    """The manifest's figures of ``art`` (on the export's reference split) and where they were measured."""
    return {"top1": art.top1, "top1_drop": art.top1_drop, "top1_drop_ci95": art.top1_drop_ci95,
            "measured_on": art.measured_on}


def fp32_artifact(bundle: Bundle) -> Artifact | None:
    """The bundle's FP32 ONNX model (``model.onnx``): the yardstick of every drop measured here."""
    return next((a for a in bundle.artifacts if a.precision == "fp32" and a.format == "onnx"), None)


def row_label(row: dict[str, Any]) -> str:
    """'model.int8.onnx on onnxruntime-cpu': one bench row, as the report names it."""
    return f"{row['artifact']} on {row['backend']}"


def reference_row(rows: list[dict[str, Any]], file: str) -> dict[str, Any] | None:
    """The measured row of ``file`` with predictions, the CPU one first (any provider runs FP32 alike)."""
    ran = [r for r in rows if r["artifact"] == file and r.get("predictions") is not None]
    return min(ran, key=lambda r: r["backend"] != "onnxruntime-cpu", default=None)


def compare_row(row: dict[str, Any], art: Artifact, ref: np.ndarray, labels: np.ndarray) -> None:
    """Add ``here`` (the drop on --data against ``ref``) and ``differs`` to a row that has ``recorded``."""
    drop, ci = paired_drop(ref == labels, np.asarray(row["predictions"]) == labels)
    row["here"] = {"top1_drop": round(drop, 3), "top1_drop_ci95": round(ci, 3), "images": int(len(labels)),
                   "isa": this_cpu()["isa"]}
    if art.top1_drop_ci95 is None:  # a bundle written before intervals: nothing to judge against
        row["differs"] = None
        return
    row["differs"] = bool(abs(drop - art.top1_drop) > art.top1_drop_ci95 + ci)


def compare_with_manifest(bundle: Bundle, rows: list[dict[str, Any]], labels: np.ndarray,
                          ref: tuple[str, np.ndarray] | None) -> None:
    """Every row of a bundle artifact with a top-1 on --data gains ``recorded``, ``here`` and
    ``differs`` (``None``: not judged); ``ref`` is (what it is, FP32 predictions) or None. The
    per-image predictions are dropped from the rows: bench.json keeps the figures only."""
    files = {a.file for a in bundle.artifacts}
    for row in rows:
        preds = row.get("predictions")
        if preds is None or row["artifact"] not in files:
            row.pop("predictions", None)
            continue
        art = bundle.artifact(row["artifact"])
        row["recorded"] = recorded(art)
        row["here"], row["differs"] = None, None  # the yardstick itself, or no yardstick
        if ref is not None and ref[0] != row_label(row):
            compare_row(row, art, ref[1], labels)
        del row["predictions"]


def _figure(figures: dict[str, Any] | None) -> str:
    """'1.25 ± 2.43' from a ``here`` or ``recorded`` dict; '-' when absent."""
    if figures is None or figures.get("top1_drop") is None:
        return "-"
    ci = figures.get("top1_drop_ci95")
    return f"{figures['top1_drop']:.2f}" + ("" if ci is None else f" ± {ci:.2f}")


def comparison_line(row: dict[str, Any]) -> str | None:
    """One line per compared row: both drops and the verdict; where each was measured when they differ."""
    rec, here, where = row["recorded"], row["here"], row_label(row)
    if here is None:
        return None  # the FP32 yardstick itself
    if row["differs"]:
        here_on = describe({**this_cpu(), "engine": row["backend"]})
        return (f"  DIFFERS {where}: {_figure(here)} here on {here_on}; {_figure(rec)} recorded on "
                f"{describe(rec['measured_on'])}: re-measure on this device before trusting the manifest's top-1")
    unknown = f" (measured on: {UNKNOWN})" if rec["measured_on"] is None else ""
    verdict = "within both intervals" if row["differs"] is False else "not judged (no interval recorded)"
    return f"  {where}: {_figure(here)} here, {_figure(rec)} recorded{unknown}: {verdict}"


def format_comparison(rows: list[dict[str, Any]], reference: str | None, missing: str = "") -> str:
    """The section under the bench table: per compared artifact its drop here beside the manifest's;
    one that differs beyond both intervals is flagged with where each figure was measured."""
    judged = [r for r in rows if "recorded" in r]
    if not judged:
        return ""
    if reference is None:
        return f"top-1 drop on --data not compared with the export's: {missing}"
    head = f"top-1 drop on --data against the FP32 {reference}, beside the export's (points, 95% interval):"
    return "\n".join([head] + [line for line in map(comparison_line, judged) if line])
