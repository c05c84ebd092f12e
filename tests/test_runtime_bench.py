"""runtime.bench: the JSON report, the table, skipped rows, top-1 on data, the PyTorch reference row."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from formats.bundle import load_bundle
from formats.errors import UserError
from formats.preprocessing import open_image, preprocess_batch
from runtime.backends import available_backends
from formats.bench import read_bench
from runtime.bench import plan, run_bench
from runtime.bench.plots import latency_figure
from runtime.dataset import load_labelled_images
from runtime.model import open_classifier
from runtime.settings import BenchSettings
from tests.runtime_helpers import REPO

FAST = dict(batches=(1, 4), seconds=0.15, warmup=1, min_iters=3)


@pytest.fixture(scope="session")
def int8_bundle(exported_bundle) -> Path:
    return exported_bundle


@pytest.fixture(scope="session")
def birds(synthetic_root) -> Path:
    return synthetic_root  # bench --data reads its CUB test split


def test_bench_report_table_and_plots(int8_bundle: Path, birds: Path, tmp_path: Path, capsys) -> None:
    report = run_bench(int8_bundle, BenchSettings(data=birds, out=tmp_path, **FAST))
    saved = read_bench(tmp_path / "bench.json")  # strict: every key, nothing unknown
    assert saved == report
    assert saved.device.cpu_cores >= 1 and saved.software.onnxruntime and saved.settings.batches == (1, 4)
    assert saved.bundle.input.shape == (-1, 3, *load_bundle(int8_bundle).preprocessing.input_size)
    assert saved.data.images == 80 and saved.budget is None
    rows = {r.artifact: r for r in saved.results}
    ran = {f: r for f, r in rows.items() if r.status == "ok"}
    assert set(ran) == {"model.onnx", "model.int8.onnx"}  # the CPU-runnable artifacts
    assert {f for f, r in rows.items() if r.status != "ok"} == {"model.fp16.onnx", "model.int8.trt.onnx"}
    for file, row in ran.items():
        assert row.backend == "onnxruntime-cpu"
        s = row.single_stream
        assert 0 < s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms and s.iterations >= 3
        assert [o.batch for o in row.offline] == [1, 4] and row.best_fps > 0
        assert row.peak_rss_mb >= row.baseline_rss_mb > 0 and row.images == 80  # the CUB test split
        assert row.baseline_rss_mb < 500  # the worker's own, not this torch-holding parent's (ru_maxrss survives exec)
        assert row.top1 == pytest.approx(_top1(int8_bundle, file, birds))
    assert (tmp_path / "latency_vs_batch.png").stat().st_size > 0
    assert (tmp_path / "accuracy_vs_latency.png").stat().st_size > 0
    table, progress = capsys.readouterr()
    assert "p90 ms" in table and "model.int8.onnx" in table and "onnxruntime-cpu" in table
    for file, row in ran.items():  # accuracy as a percentage, as in every table and plot
        assert f"{100 * row.top1:.2f}%" in next(line for line in table.splitlines() if line.startswith(file + " "))
    for step in ("started (6 steps)", "loading the model", "warm-up (1 runs)", "SingleStream, batch 1",
                 "Offline batch 1: the SingleStream runs", "Offline batch 4", "accuracy on --data (80 images)",
                 "done, 6 steps in"):  # one stage per artifact and backend, never a silent minute
        assert f"bench model.int8.onnx on onnxruntime-cpu: {step}" in progress
    assert "bench --data: decoding" in progress
    if not all(r.single_stream.p99_reliable for r in ran.values()):  # short test runs: flagged
        assert "p99 from fewer than 100 runs" in table


def test_the_latency_plot_draws_the_table_s_figures_at_the_measured_batch_sizes(int8_bundle: Path, tmp_path: Path,
                                                                               capsys) -> None:
    """Batch 1 is measured once (the SingleStream runs), so the plot's batch-1 point is the table's p50."""
    settings = BenchSettings(out=tmp_path, artifacts=("model.onnx",), **{**FAST, "batches": (1, 2, 4)})
    report = run_bench(int8_bundle, settings)
    (row,) = report.results
    assert row.offline[0].batch == 1 and row.offline[0].latency == row.single_stream
    assert row.offline[0].images_per_s == pytest.approx(1e3 / row.single_stream.mean_ms, rel=1e-3)
    table = capsys.readouterr().out
    p50_in_table = float(next(line for line in table.splitlines() if line.startswith("model.onnx ")).split()[4])
    fig = latency_figure(report.results)
    (line,) = fig.axes[0].lines
    drawn = dict(line.get_xydata().tolist())
    assert round(drawn[1], 2) == p50_in_table and drawn[1] == row.single_stream.p50_ms
    assert drawn == {o.batch: o.latency.p50_ms for o in row.offline}
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "2", "4"]  # ticks at the measured sizes
    assert fig.axes[0].get_xscale() == "log"
    from matplotlib import pyplot  # latency_figure chose the file-only backend
    pyplot.close(fig)


def test_a_worker_that_outlives_its_timeout_is_a_failed_row(int8_bundle: Path, tmp_path: Path) -> None:
    settings = BenchSettings(out=tmp_path, artifacts=("model.onnx",), timeout_s=0.05, plots=False, **FAST)
    rows = run_bench(int8_bundle, settings).results
    assert [(r.status, r.note) for r in rows] == [("failed", "worker timed out after 0.05 s (raise --timeout)")]


def _top1(bundle: Path, artifact: str, data: Path) -> float:
    """Independent top-1: predict the same test images one by one through the library."""
    clf = open_classifier(bundle, "onnxruntime-cpu", artifact)
    items = load_labelled_images(data, clf.bundle.labels)
    hits = [int(clf.logits(preprocess_batch([open_image(p)], clf.bundle.preprocessing))[0].argmax()) == y
            for p, y in items]
    return float(np.mean(hits))


def test_plan_skips_artifacts_with_a_note(int8_bundle: Path) -> None:
    b = load_bundle(int8_bundle)
    # A GPU-targeted entry (as export writes for FP16); planning looks at the manifest only.
    assert {a.target for a in b.artifacts} == {"any", "gpu", "onnxruntime-cpu", "tensorrt"}
    jobs, notes = plan(b, BenchSettings(backends=("onnxruntime-cpu",)))
    assert [(j.artifact, j.backend) for j in jobs] == [("model.onnx", "onnxruntime-cpu"), ("model.int8.onnx", "onnxruntime-cpu")]
    skipped = {n.artifact: n.note for n in notes}
    assert set(skipped) == {"model.fp16.onnx", "model.int8.trt.onnx"}
    assert "skipped: target gpu" in skipped["model.fp16.onnx"]


def test_bench_refuses_unusable_or_unknown_backend(int8_bundle: Path) -> None:
    with pytest.raises(UserError, match="unknown backend 'onnx'.*onnxruntime-cpu"):
        BenchSettings(backends=("onnx",))
    if "tensorrt" not in available_backends():
        with pytest.raises(UserError, match="TensorRT is not installed"):
            plan(load_bundle(int8_bundle), BenchSettings(backends=("tensorrt",)))


def test_bench_cli_with_torch_reference(int8_bundle: Path, trained_checkpoint: Path, tmp_path: Path) -> None:
    """The CLI end to end, with the optional PyTorch eager reference row from the student checkpoint."""
    ckpt = trained_checkpoint
    cmd = [sys.executable, "-m", "runtime.bench", str(int8_bundle), "--artifact", "model.onnx", "--batch", "1,2",
           "--seconds", "0.1", "--warmup", "1", "--no-plots", "--out", str(tmp_path / "out"),
           "--reference-checkpoint", str(ckpt)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "torch-eager" in out.stdout and "FPS (batch)" in out.stdout
    rows = read_bench(tmp_path / "out" / "bench.json").results
    assert [(r.artifact, r.backend, r.status) for r in rows] == [
        ("model.onnx", "onnxruntime-cpu", "ok"), ("best.pt", "torch-eager", "ok")]
    assert not (tmp_path / "out" / "latency_vs_batch.png").exists()
    bad = subprocess.run([sys.executable, "-m", "runtime.bench", str(int8_bundle), "--batch", "0"], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --batch") and "Traceback" not in bad.stderr


def test_a_worker_step_that_takes_long_is_never_silent() -> None:
    """An engine build or a slow batch says nothing for minutes: the parent says it is still running."""
    import io

    from formats.progress import stage
    from runtime.bench.worker import PROGRESS, _run_reporting
    code = f"import time; print({PROGRESS!r} + 'loading the model', flush=True); time.sleep(0.6)"
    log = io.StringIO()
    with stage("bench x on y", 1, "step", stream=log, every_s=3600) as step:
        status, _ = _run_reporting([sys.executable, "-c", code], {}, 30.0, step, quiet_s=0.2)
    lines = log.getvalue().splitlines()
    assert status == 0 and lines[1] == "bench x on y: loading the model"
    assert any(line.startswith("bench x on y: loading the model: still running, ") for line in lines[2:])
    assert lines[-1].startswith("bench x on y: done, 1 steps in")
