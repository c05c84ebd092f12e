"""predict and serve run the fastest artifact within the accuracy budget for this device, and say which
(runtime.choice): measured by a bench.json of this bundle on this device, else the static rule."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from formats.bench import BenchReport, read_bench, write_bench
from formats.bundle import load_bundle
from formats.errors import UserError
from runtime.bench import run_bench
from runtime.choice import choose_artifact, default_bench_path
from runtime.model import open_classifier
from runtime.settings import BenchSettings
from tests.runtime_helpers import REPO, doctored, make_images
from tests.test_runtime_bench import FAST

INT8, FP32 = "model.int8.onnx", "model.onnx"


def within(art: dict[str, Any]) -> None:
    """Every artifact within the accuracy budget: the rule, not the export's verdict on this CPU, is tested."""
    art["budget"]["within_budget"] = True


def int8_over(art: dict[str, Any]) -> None:
    art["budget"]["within_budget"] = art["file"] != INT8


@pytest.fixture(scope="module")
def bundle(exported_bundle: Path, tmp_path_factory) -> Path:
    return doctored(exported_bundle, tmp_path_factory.mktemp("choice") / "within", within)


@pytest.fixture(scope="module")
def measured(bundle: Path, tmp_path_factory) -> BenchReport:
    """A real bench of the CPU artifacts of ``bundle`` on this machine."""
    return run_bench(bundle, BenchSettings(out=tmp_path_factory.mktemp("bench"), plots=False, **FAST))


def with_p50(report: BenchReport, p50: dict[str, float]) -> BenchReport:
    """The report with the SingleStream p50 of some artifacts set, as a device where they run so would measure."""
    def row(r):
        if r.artifact not in p50:
            return r
        return dataclasses.replace(r, single_stream=dataclasses.replace(r.single_stream, p50_ms=p50[r.artifact]))
    return dataclasses.replace(report, results=tuple(row(r) for r in report.results))


def at_default_place(report: BenchReport, cwd: Path) -> Path:
    path = cwd / default_bench_path(load_bundle(report.bundle.path))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bench(path, report)
    return path


def test_without_a_bench_the_static_rule_runs_int8_on_a_cpu(bundle: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no runs/bench here
    b = load_bundle(bundle)
    for backend in ("onnxruntime-cpu", "onnxruntime"):  # onnxruntime resolves to the CPU here and runs INT8 too
        choice = choose_artifact(b, backend)
        assert choice.artifact.file == INT8 and choice.others == (FP32,)
        assert "static rule for cpu: INT8 > FP32" in choice.reason and "runs/bench/demo/bench.json" in choice.reason
    assert choice.line.startswith(f"artifact: {INT8} (static rule") and choice.line.endswith(f"budget: {FP32}")
    over = load_bundle(doctored(bundle, tmp_path / "over", int8_over))
    only = choose_artifact(over, "onnxruntime-cpu")  # never one over the accuracy budget...
    assert only.artifact.file == FP32 and only.reason.startswith("the only artifact within the accuracy budget")
    assert choose_artifact(over, "onnxruntime-cpu", INT8).reason == "named with --artifact"  # ...unless named


def test_a_bench_of_this_device_picks_the_lowest_p50(bundle: Path, measured: BenchReport, tmp_path: Path,
                                                     monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    b = load_bundle(bundle)
    at_default_place(with_p50(measured, {FP32: 0.5, INT8: 0.9}), tmp_path)  # FP32 faster here: measured beats the rule
    choice = choose_artifact(b, "onnxruntime")
    assert choice.artifact.file == FP32 and choice.others == (INT8,)
    assert choice.reason.startswith("fastest measured on this device: SingleStream p50 0.50 ms against "
                                    f"{INT8} 0.90 ms, from runs/bench/demo/bench.json")
    assert open_classifier(b, "onnxruntime-cpu").artifact.file == FP32  # the library's default is the same
    explicit = tmp_path / "elsewhere.json"
    write_bench(explicit, with_p50(measured, {FP32: 2.0, INT8: 1.0}))
    assert choose_artifact(b, "onnxruntime-cpu", bench=explicit).artifact.file == INT8  # --bench wins over the default
    with pytest.raises(UserError, match="--bench .*nope.json not found"):
        choose_artifact(b, "onnxruntime-cpu", bench=tmp_path / "nope.json")
    over = load_bundle(doctored(bundle, tmp_path / "over", int8_over))
    assert choose_artifact(over, "onnxruntime-cpu", bench=explicit).artifact.file == FP32  # fastest, but over budget


@pytest.mark.parametrize("change,why", [
    (lambda r: dataclasses.replace(r, device=dataclasses.replace(r.device, cpu="Elsewhere CPU 9000")),
     "was measured on another device (Elsewhere CPU 9000"),
    (lambda r: dataclasses.replace(r, bundle=dataclasses.replace(
        r.bundle, artifacts_sha256={**r.bundle.artifacts_sha256, INT8: "0" * 64})),
     "measured another export of model.int8"),
    (lambda r: dataclasses.replace(r, results=tuple(x for x in r.results if x.artifact != INT8)),
     f"has no onnxruntime-cpu measurement of {INT8}"),
], ids=["other-device", "re-exported", "not-measured"])
def test_a_bench_that_does_not_apply_falls_back_to_the_static_rule_and_says_why(
        bundle: Path, measured: BenchReport, tmp_path: Path, monkeypatch, change, why: str) -> None:
    monkeypatch.chdir(tmp_path)
    at_default_place(change(with_p50(measured, {FP32: 0.5, INT8: 0.9})), tmp_path)
    choice = choose_artifact(load_bundle(bundle), "onnxruntime-cpu")
    assert choice.artifact.file == INT8 and "static rule for cpu" in choice.reason and why in choice.reason


def test_a_damaged_default_bench_is_said_and_skipped(bundle: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "runs" / "bench" / "demo" / "bench.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    choice = choose_artifact(load_bundle(bundle), "onnxruntime-cpu")
    assert choice.artifact.file == INT8 and "bench.json unreadable" in choice.reason


def test_predict_and_its_json_say_which_artifact_on_stderr(bundle: Path, measured: BenchReport,
                                                           tmp_path: Path) -> None:
    images = make_images(tmp_path / "images")[:2]
    at_default_place(with_p50(measured, {FP32: 0.5, INT8: 0.9}), tmp_path)
    cmd = [sys.executable, "-m", "runtime.predict", str(bundle), *map(str, images), "--json"]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"artifact: {FP32} (fastest measured on this device" in out.stderr
    assert all(line.startswith(("artifact: ", "note: ")) for line in out.stderr.splitlines()), out.stderr  # no chatter
    assert {r["artifact"] for r in json.loads(out.stdout)} == {FP32}  # stdout stays JSON
    named = subprocess.run([*cmd, "--artifact", INT8], cwd=tmp_path, capture_output=True, text=True, env=env,
                           timeout=120)
    assert f"artifact: {INT8} (named with --artifact)" in named.stderr
    assert {r["artifact"] for r in json.loads(named.stdout)} == {INT8}
    assert read_bench(tmp_path / "runs" / "bench" / "demo" / "bench.json").bundle.artifacts_sha256[INT8]
