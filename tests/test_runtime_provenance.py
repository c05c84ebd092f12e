"""Portable numbers, the runtime side: predict and serve say once when the device is not where an
INT8 artifact's accuracy was measured, and bench --data re-measures the drop beside the manifest's.

Nothing here assumes which CPU runs it: the notes expected are formats.isa's own for the manifest
written, and the bench figures are checked against each other, not against fixed numbers.
"""
from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from formats.bundle import load_bundle
from formats.isa import describe, provenance_note, this_cpu
from formats.paired import paired_drop
from formats.bench import read_bench
from runtime.bench import run_bench
from runtime.predict import predict_files
from runtime.settings import BenchSettings
from tests.runtime_helpers import doctored, make_images, start_server
from tests.test_runtime_bench import FAST

INT8 = "model.int8.onnx"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return make_images(tmp_path_factory.mktemp("provenance-images"))


def other_class() -> str:
    """An ISA class that is not this CPU's, whichever CPU runs the test."""
    return "arm64-dotprod" if this_cpu()["isa"].startswith("x86") else "x86-avx2"


def moved_elsewhere(art: dict[str, Any]) -> None:
    art["measured_on"] = {**(art.get("measured_on") or {}), "isa": other_class(), "cpu": "Elsewhere CPU 9000"}


def before_provenance(art: dict[str, Any]) -> None:
    art.pop("measured_on", None)
    art.pop("top1_drop_ci95", None)


def notes(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("note:")]


def test_the_exported_bundle_records_where_int8_was_measured(exported_bundle: Path) -> None:
    art = load_bundle(exported_bundle).artifact(INT8)
    assert art.measured_on is not None and art.measured_on["isa"] == this_cpu()["isa"]  # exported here
    assert art.top1_drop is not None and art.top1_drop_ci95 is not None and art.top1_drop_ci95 >= 0


def test_predict_says_nothing_where_int8_was_measured(exported_bundle: Path, images: list[Path], capsys) -> None:
    predict_files(exported_bundle, images[:2], backend="onnxruntime-cpu", artifact=INT8)
    assert notes(capsys.readouterr().err) == []


def test_predict_says_once_when_int8_was_measured_on_another_cpu(exported_bundle: Path, images: list[Path],
                                                                   tmp_path: Path, capsys) -> None:
    moved = doctored(exported_bundle, tmp_path / "moved", moved_elsewhere)
    many = images * 4  # more images than the bundle's max batch: two batches, still one note
    predict_files(moved, many, backend="onnxruntime-cpu", artifact=INT8)
    expected = provenance_note(INT8, load_bundle(moved).artifact(INT8).measured_on)
    assert expected is not None and other_class() in expected and "runtime.bench" in expected
    assert notes(capsys.readouterr().err) == [expected]
    predict_files(moved, images[:1], backend="onnxruntime-cpu", artifact="model.onnx")
    assert notes(capsys.readouterr().err) == []  # FP32: float kernels agree across CPUs up to rounding


def test_predict_says_measured_on_unknown_for_a_bundle_before_provenance(exported_bundle: Path, images: list[Path],
                                                                         tmp_path: Path, capsys) -> None:
    old = doctored(exported_bundle, tmp_path / "old", before_provenance)
    assert load_bundle(old).artifact(INT8).measured_on is None  # absent, not guessed
    predict_files(old, images[:1], backend="onnxruntime-cpu", artifact=INT8)
    said = notes(capsys.readouterr().err)
    assert len(said) == 1 and ("measured on: unknown" in said[0] or "could not be read" in said[0])


def test_serve_says_it_once_at_start_and_in_the_model_metadata(exported_bundle: Path, tmp_path: Path) -> None:
    moved = doctored(exported_bundle, tmp_path / "moved", moved_elsewhere)
    recorded = load_bundle(moved).artifact(INT8).measured_on
    proc, url = start_server(moved, "--backend", "onnxruntime-cpu", "--artifact", INT8)
    try:
        meta = httpx.get(f"{url}/v2/models/{load_bundle(moved).name}").json()
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
    assert meta["parameters"]["measured_on"] == describe(recorded) and other_class() in describe(recorded)
    assert notes(output) == [provenance_note(INT8, recorded)]


def test_the_paired_drop_is_export_s_interval() -> None:
    """One formula (formats.paired) for export's interval and bench's, so the two can be added."""
    from export.evaluation import Predictions, drop_ci95
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 200)
    ref = np.where(rng.random(200) < 0.8, labels, (labels + 1) % 5)
    pred = np.where(rng.random(200) < 0.1, (ref + 2) % 5, ref)
    drop, ci = paired_drop(ref == labels, pred == labels)
    assert drop == pytest.approx(100 * ((ref == labels).mean() - (pred == labels).mean()))
    assert ci == pytest.approx(drop_ci95(Predictions(np.eye(5)[pred], labels), Predictions(np.eye(5)[ref], labels)))
    assert paired_drop(ref == labels, ref == labels) == (0.0, 0.0)


def test_bench_sets_the_drop_here_beside_the_manifest_s(exported_bundle: Path, synthetic_root: Path,
                                                         tmp_path: Path, capsys) -> None:
    report = run_bench(exported_bundle, BenchSettings(data=synthetic_root, out=tmp_path, plots=False, **FAST))
    raw = json.loads((tmp_path / "bench.json").read_text())
    assert all("predictions" not in r for r in raw["results"])  # per-image answers stay in the workers' files
    saved = read_bench(tmp_path / "bench.json")
    assert saved.device.isa == this_cpu()["isa"]
    assert saved.data.fp32_reference == "model.onnx on onnxruntime-cpu" and saved.data.no_reference is None
    rows = {r.artifact: r for r in saved.results if r.status == "ok"}
    bundle = load_bundle(exported_bundle)
    for file, row in rows.items():
        art = bundle.artifact(file)
        assert (row.recorded.top1, row.recorded.top1_drop, row.recorded.top1_drop_ci95, row.recorded.measured_on) == \
            (art.top1, art.top1_drop, art.top1_drop_ci95, art.measured_on)
    assert rows["model.onnx"].here is None and rows["model.onnx"].differs is None  # the yardstick itself
    assert raw["results"][[r["artifact"] for r in raw["results"]].index("model.onnx")]["here"] is None  # null, as documented
    here = rows[INT8].here
    assert here.images == rows[INT8].images and here.isa == this_cpu()["isa"] and here.top1_drop_ci95 >= 0
    # paired on the same images, the drop is the difference of the two top-1 figures of the table
    assert here.top1_drop == pytest.approx(100 * (rows["model.onnx"].top1 - rows[INT8].top1), abs=0.02)
    assert isinstance(rows[INT8].differs, bool)
    out = capsys.readouterr().out
    assert "top-1 drop on --data against the FP32 model.onnx on onnxruntime-cpu" in out
    assert ("DIFFERS " + INT8 in out) == rows[INT8].differs
    assert rows[INT8].differs or f"{INT8} on onnxruntime-cpu: {here.top1_drop:.2f} ± " in out
    assert report == saved


def test_bench_flags_a_drop_outside_both_intervals(exported_bundle: Path, synthetic_root: Path, tmp_path: Path,
                                                   capsys) -> None:
    """A manifest that claims a 50-point drop known to 0.1: no device measures that, so it is flagged.
    Only the INT8 artifact is measured, so the FP32 reference is run once more for the comparison."""
    def claims_50(art: dict[str, Any]) -> None:
        if art["file"] == INT8:
            art.update(top1_drop=50.0, top1_drop_ci95=0.1)
    wrong = doctored(exported_bundle, tmp_path / "wrong", claims_50)
    settings = BenchSettings(data=synthetic_root, out=tmp_path / "out", artifacts=(INT8,), plots=False, **FAST)
    (row,) = run_bench(wrong, settings).results
    assert row.recorded.top1_drop == 50.0 and row.differs is True
    out, err = capsys.readouterr()
    assert "measuring model.onnx on onnxruntime-cpu for the top-1 drop on --data: done" in err  # a progress stage
    flagged = [line for line in out.splitlines() if line.strip().startswith(f"DIFFERS {INT8}")]
    assert len(flagged) == 1 and "50.00 ± 0.10 recorded" in flagged[0]
    assert describe(row.recorded.measured_on) in flagged[0]
    assert describe({**this_cpu(), "engine": "onnxruntime-cpu"}) in flagged[0]


def test_bench_does_not_judge_a_bundle_before_provenance(exported_bundle: Path, synthetic_root: Path,
                                                         tmp_path: Path, capsys) -> None:
    old = doctored(exported_bundle, tmp_path / "old", before_provenance)
    settings = BenchSettings(data=synthetic_root, out=tmp_path / "out", artifacts=(INT8,), plots=False, **FAST)
    (row,) = run_bench(old, settings).results
    assert row.recorded.measured_on is None and row.recorded.top1_drop_ci95 is None
    assert row.here.top1_drop_ci95 >= 0 and row.differs is None  # measured, not flagged
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.strip().startswith(f"{INT8} on onnxruntime-cpu:")]
    assert "(measured on: unknown): not judged" in line and "DIFFERS" not in out
