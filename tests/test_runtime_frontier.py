"""Several bundles on one device: the frontier per precision, the pick within a latency budget."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from formats.frontier import FrontierRow, read_frontier
from runtime.bench import run_bench_many
from runtime.bench.__main__ import main
from runtime.bench.frontier import format_frontier, mark_frontier, pick
from runtime.settings import BenchSettings

FAST = dict(batches=(1,), seconds=0.15, warmup=1, min_iters=3)


def _row(bundle, precision, p50, top1, p90=None, within=True):
    return FrontierRow(bundle=bundle, arch="a", artifact=f"{bundle}.onnx", backend="onnxruntime-cpu",
                       precision=precision, top1=top1, top1_source="export (test split)", p50_ms=p50,
                       p90_ms=p90 or p50 * 1.25, best_fps=None, size_mb=1.0, within_accuracy_budget=within,
                       frontier=False)


def test_frontier_is_pareto_within_each_precision():
    rows = mark_frontier([_row("fast", "int8", 1.0, 0.70), _row("slow-worse", "int8", 3.0, 0.69),
                          _row("slow-better", "int8", 4.0, 0.80), _row("tie-slower", "int8", 5.0, 0.80),
                          _row("fp32-slow", "fp32", 9.0, 0.50)])
    on = {r.bundle: r.frontier for r in rows}
    assert on == {"fast": True, "slow-worse": False, "slow-better": True, "tie-slower": False,
                  "fp32-slow": True}  # fp32 has its own frontier: a slow fp32 is not beaten by int8 rows
    assert "* on its precision's frontier" in format_frontier(rows)


def test_pick_most_accurate_within_budget_or_say_plainly_which_is_closest():
    rows = mark_frontier([_row("a", "int8", 1.0, 0.70), _row("b", "int8", 2.0, 0.75), _row("c", "fp32", 6.0, 0.80)])
    assert pick(rows, 2.0).choice.bundle == "b" and pick(rows, 2.0).met
    assert pick(rows, 10.0).choice.bundle == "c"
    missed = pick(rows, 0.5)
    assert not missed.met and missed.choice.bundle == "a"
    assert "no artifact meets 0.5 ms" in missed.message and "the fastest is a" in missed.message
    assert pick(mark_frontier([_row("x", "int8", 1.0, None)]), 5.0).choice is None


def test_pick_judges_the_median_and_never_an_artifact_over_its_accuracy_budget():
    # the case: on a busy host ResNet-18 INT8 has p50 2.33 ms but p90 6.27 ms; MobileNetV4-small INT8
    # is faster but export marked it over the accuracy budget
    rows = mark_frontier([_row("resnet18", "int8", 2.33, 0.708, p90=6.27),
                          _row("mnv4", "int8", 0.9, 0.306, within=False)])
    chosen = pick(rows, 5.0)
    assert chosen.met and chosen.choice.bundle == "resnet18"
    assert "(p50, batch 1)" in chosen.message and "p90 6.27 ms" in chosen.message
    assert pick(rows, 1.0).choice.bundle == "resnet18" and not pick(rows, 1.0).met  # closest trusted one
    only_over = mark_frontier([_row("mnv4", "int8", 0.9, 0.306, within=False)])
    assert pick(only_over, 5.0).choice.bundle == "mnv4"  # nothing else to offer: said, not hidden
    table = format_frontier(rows).splitlines()
    assert any(line.startswith("mnv4") and line.endswith("!") for line in table)  # marked in the table
    assert not any(line.startswith("resnet18") and line.endswith("!") for line in table)


def test_two_bundles_one_table_one_plot_and_the_pick(exported_bundle: Path, tmp_path: Path, capsys):
    twin = tmp_path / "twin"
    shutil.copytree(exported_bundle, twin)  # the same manifest name: the folders are told apart
    summary = run_bench_many([exported_bundle, twin], BenchSettings(out=tmp_path / "out", budget_ms=1e4, **FAST))
    saved = read_frontier(tmp_path / "out" / "frontier.json")  # strict: every key, nothing unknown
    assert saved == summary and saved.device.cpu_cores >= 1
    name = next(iter(saved.bundles))
    assert list(saved.bundles) == [name, f"{name}-2"]
    assert {(r.bundle, r.artifact) for r in saved.rows} == {
        (b, f) for b in saved.bundles for f in ("model.onnx", "model.int8.onnx")}
    assert all(r.top1_source == "export (test split)" and 0 <= r.top1 <= 1 for r in saved.rows)
    assert saved.budget.met and saved.budget.choice in saved.rows
    for b in saved.bundles:
        assert (tmp_path / "out" / b / "bench.json").is_file()
    assert (tmp_path / "out" / "frontier.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "frontier" in out and "most accurate within 10000 ms" in out


def test_several_bundles_refuse_artifact_names_and_a_bad_budget(exported_bundle: Path, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(exported_bundle), str(exported_bundle), "--artifact", "model.onnx", "--out", str(tmp_path)])
    assert exc.value.code != 0 and "--artifact names files of one bundle" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(exported_bundle), "--budget-ms", "0"])
    assert exc.value.code != 0 and "--budget-ms must be > 0" in capsys.readouterr().err


def test_frontier_labels_that_would_overlap_are_stacked():
    """Two bundles of one latency and top-1 (twins, or an FP32 and an INT8 that tie) get readable labels."""
    from matplotlib import pyplot
    from runtime.bench.plots import _pyplot, label_offsets
    _pyplot()  # the file-only backend
    fig, ax = pyplot.subplots(figsize=(7, 4.5))
    points = [(1.0, 70.0), (1.0, 70.0), (1.01, 70.1), (30.0, 70.0), (1.0, 40.0)]
    ax.scatter(*zip(*points))
    ax.set_xscale("log")
    offsets = label_offsets(ax, points, ["resnet18"] * len(points))
    pyplot.close(fig)
    assert len(set(offsets[:3])) == 3  # three labels on about one spot: three lines
    assert offsets[3:] == [3.0, 3.0]  # far to the right, far below: where they would be anyway
