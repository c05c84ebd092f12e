"""distill sweep: several students from one teacher cache, exported and benchmarked into one frontier."""
import json
from pathlib import Path

import pytest

import distill.cache as cache_mod
from distill.__main__ import cli
from distill.config import load_config
from distill.sweep import SweepSettings, export_student, int8_missed, split_students, sweep
from formats.errors import UserError
from tests.conftest import REPO, demo_overrides

STUDENTS = ["resnet18", "timm:mobilenetv4_conv_small"]


@pytest.fixture(scope="module")
def swept(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    cfg = load_config(REPO / "configs" / "demo.yaml", demo_overrides(synthetic_root, out, **{
        "train.epochs": 1, "teacher.cache_views": 2, "train.name": "sw"}))
    builds = []
    real = cache_mod.build_cache
    cache_mod.build_cache = lambda c, *a, **k: builds.append(c.teacher.cache) or real(c, *a, **k)
    settings = SweepSettings(budget_ms=1e4, export_args="--int8 --best-effort --calib-images 32 --eval-images 16",
                             bench_args="--batch 1 --seconds 0.15 --warmup 1 --min-iters 3 --no-plots")
    try:
        summary = sweep(cfg, STUDENTS, settings)
    finally:
        cache_mod.build_cache = real
    return Path(cfg.train.out_dir) / "sw", summary, builds, cfg, settings


def test_every_student_trained_from_one_cache_exported_and_benchmarked(swept):
    root, summary, builds, _, _ = swept
    assert builds == [str(root / "teacher-cache")]  # one cache for every student
    assert [r["student"] for r in summary["students"]] == STUDENTS
    for row in summary["students"]:
        assert 0 <= row["test_top1"] <= 1 and Path(row["run"], "best.pt").is_file()
        assert row["export"]["status"] == "ok"
        assert {"model.onnx", "model.int8.onnx"} <= set(row["export"]["artifacts"])
    assert json.loads((root / "sweep.json").read_text()) == json.loads(json.dumps(summary))
    frontier = json.loads(Path(summary["bench"]["result"]).read_text())
    assert {r["arch"] for r in frontier["rows"]} == set(STUDENTS)
    assert summary["bench"]["budget"]["met"] and summary["bench"]["budget"]["choice"] in frontier["rows"]


def test_a_second_sweep_reuses_runs_and_bundles(swept):
    root, _, _, cfg, settings = swept
    again = sweep(cfg, STUDENTS, SweepSettings(export_args=settings.export_args, bench=False))
    assert all(r["export"]["reused"] for r in again["students"]) and "bench" not in again
    other = sweep(cfg, STUDENTS[:1], SweepSettings(export_args=settings.export_args + " --fp16", bench=False))
    assert not other["students"][0]["export"]["reused"]  # other export options: exported again
    assert "model.fp16.onnx" in other["students"][0]["export"]["artifacts"]


def test_int8_over_budget_gets_quantization_aware_training_and_a_second_export(swept, monkeypatch):
    import distill.sweep
    root, _, _, cfg, settings = swept
    # Which exports count as a miss is tested below; here the first export is taken as one (a real miss
    # on a 1-epoch student depends on the CPU's INT8 numerics), and QAT and the second export run for real.
    monkeypatch.setattr(distill.sweep, "int8_missed", lambda export: export["status"] == "ok")
    summary = sweep(cfg, STUDENTS[:1], SweepSettings(export_args=settings.export_args, bench=False, qat=True,
                                                     qat_args="--epochs 1 --calib-images 32"))
    row = summary["students"][0]
    assert row["export_ptq"]["status"] == "ok" and row["qat"]["status"] == "ok", row
    assert row["export"]["status"] == "ok" and Path(row["qat"]["folder"], "qat.json").is_file()
    manifest = json.loads(Path(row["export"]["bundle"], "manifest.json").read_text())
    methods = {a["file"]: a["quantization"]["method"] for a in manifest["artifacts"] if a.get("quantization")}
    assert methods == {"model.int8.onnx": "qat", "model.int8.trt.onnx": "qat"}
    assert manifest["options"]["qat"] == row["qat"]["folder"] and row["qat"]["reused"] is False
    again = sweep(cfg, STUDENTS[:1], SweepSettings(export_args=settings.export_args, bench=False, qat=True,
                                                   qat_args="--epochs 1 --calib-images 32"))["students"][0]
    assert again["qat"]["reused"] and again["export"]["reused"]  # same checkpoint, same options: nothing redone


def test_which_exports_count_as_an_int8_miss():
    ok = {"status": "ok", "artifacts": {"model.onnx": {"precision": "fp32", "within_budget": True},
                                        "model.int8.onnx": {"precision": "int8", "within_budget": True}}}
    assert not int8_missed(ok)
    ok["artifacts"]["model.int8.trt.onnx"] = {"precision": "int8", "within_budget": False}
    assert int8_missed(ok)
    assert int8_missed({"status": "failed", "exit": 3, "reason": "error: no INT8 recipe for model.int8.onnx met ..."})
    assert not int8_missed({"status": "failed", "exit": 2, "reason": "error: checkpoint x not found"})
    with pytest.raises(UserError, match="--export-args must include --int8"):
        SweepSettings(qat=True, export_args="--fp16")


def test_a_failed_export_is_a_row_that_says_why(tmp_path):
    (tmp_path / "best.pt").write_bytes(b"not a checkpoint")
    record = export_student(tmp_path / "best.pt", tmp_path / "bundle", "--int8")
    assert record["status"] == "failed" and record["exit"] != 0
    assert "cannot be loaded safely" in record["reason"] and not (tmp_path / "bundle").exists()


def test_students_are_named_once_and_checked_before_any_work(tmp_path, capsys):
    assert split_students(["student.arch=resnet18, timm:convnext_atto", "train.epochs=1"]) == (
        ["resnet18", "timm:convnext_atto"], ["train.epochs=1"])
    with pytest.raises(UserError, match="name the students"):
        split_students(["train.epochs=1"])
    with pytest.raises(UserError, match="names a student twice"):
        split_students(["student.arch=resnet18,resnet18"])
    with pytest.raises(SystemExit) as exc:
        cli(["sweep", "--config", str(REPO / "configs" / "demo.yaml"), "student.arch=resnet18,timm:mobilenetv4_small",
             f"train.out_dir={tmp_path}"])
    assert exc.value.code == 2 and "did you mean timm:mobilenetv4_conv_small" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before the cache, training or any folder
