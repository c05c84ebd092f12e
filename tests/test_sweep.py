"""pipeline sweep: several students from one teacher cache, exported and benchmarked into one frontier."""
import json
from pathlib import Path

import pytest

import distill.cache as cache_mod
import pipeline.sweep
from distill.cache_ready import cache_folder
from distill.data import load_dataset
from distill.config import load_config
from export import BudgetError, ExportOptions
from formats.errors import UserError
from formats.frontier import read_frontier
from formats.sweep import ArtifactFigures, Failure, StageRun, Sweep
from pipeline.__main__ import main as cli
from pipeline.settings import SweepSettings
from pipeline.stages import attempt, export_student
from pipeline.sweep import int8_missed, split_students, sweep
from tests.conftest import REPO, demo_overrides

STUDENTS = ["resnet18", "timm:mobilenetv4_conv_small"]
EXPORT_ARGS = "--int8 --best-effort --calib-images 32 --eval-images 16"


@pytest.fixture(scope="module")
def swept(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    cfg = load_config(REPO / "configs" / "demo.yaml", demo_overrides(synthetic_root, out, **{
        "train.epochs": 1, "teacher.cache_views": 2, "train.name": "sw"}))
    builds = []
    real = cache_mod.build_cache
    cache_mod.build_cache = lambda c, *a, **k: builds.append(c.teacher.cache) or real(c, *a, **k)
    settings = SweepSettings(budget_ms=1e4, export_args=EXPORT_ARGS,
                             bench_args="--batch 1 --seconds 0.15 --warmup 1 --min-iters 3 --no-plots")
    try:
        summary = sweep(cfg, STUDENTS, settings)
    finally:
        cache_mod.build_cache = real
    return Path(cfg.train.out_dir) / "sw", summary, builds, cfg


def test_every_student_trained_from_one_cache_exported_and_benchmarked(swept):
    root, summary, builds, cfg = swept
    # one cache for every student, at the default folder a plain run or compare of this setup uses
    assert builds == [str(cache_folder(cfg, load_dataset(cfg.data)))] and summary.cache_build_s > 0
    assert [r.student for r in summary.students] == STUDENTS
    for row in summary.students:
        assert 0 <= row.test_top1 <= 1 and Path(row.run, "best.pt").is_file()
        assert row.export.ok and not row.export.reused and row.export.command.startswith("python -m export ")
        assert {"model.onnx", "model.int8.onnx"} <= {a.file for a in row.export.artifacts}
    assert Sweep.read(root / "sweep.json") == summary and summary.wall_s is not None
    frontier = read_frontier(summary.bench.result)
    assert {r.arch for r in frontier.rows} == set(STUDENTS)
    assert summary.bench.pick.met and summary.bench.pick.choice in frontier.rows
    assert summary.bench.command.startswith("python -m runtime.bench ") and "--budget-ms 10000" in summary.bench.command


def test_sweep_json_is_read_strictly(swept, tmp_path):
    root, summary, _, _ = swept
    d = summary.to_dict()
    assert Sweep.from_dict(json.loads(json.dumps(d)), "sweep.json") == summary
    d["students"][0]["export"]["surprise"] = 1
    with pytest.raises(UserError, match=r"students\[0\]: export has an unknown \w+ 'surprise'"):
        Sweep.from_dict(d, "sweep.json")
    del d["students"][0]["export"]["surprise"], d["students"][0]["export"]["command"]
    with pytest.raises(UserError, match=r"students\[0\]: export lacks the \w+ 'command'"):
        Sweep.from_dict(d, "sweep.json")
    with pytest.raises(UserError, match="schema version 0"):
        Sweep.from_dict({**summary.to_dict(), "schema_version": 0}, "sweep.json")


def test_a_second_sweep_reuses_runs_and_bundles(swept, capsys):
    root, _, _, cfg = swept
    again = sweep(cfg, STUDENTS, SweepSettings(export_args=EXPORT_ARGS, bench=False))
    assert all(r.export.reused for r in again.students) and again.bench is None
    err = capsys.readouterr().err  # a line per student per stage, and the cache reused, not built again
    assert "teacher cache: reused" in err and "sweep: started (2 students)" in err
    for arch in STUDENTS:
        assert f"sweep: {arch}: trained, test top-1 " in err and f"sweep: {arch}: export reused" in err
    other = sweep(cfg, STUDENTS[:1], SweepSettings(export_args=EXPORT_ARGS + " --fp16", bench=False))
    assert not other.students[0].export.reused  # other export options: exported again
    assert "model.fp16.onnx" in {a.file for a in other.students[0].export.artifacts}


def test_int8_over_budget_gets_quantization_aware_training_and_a_second_export(swept, monkeypatch):
    root, _, _, cfg = swept
    # Which exports count as a miss is tested below; here the first export is taken as one (a real miss
    # on a 1-epoch student depends on the CPU's INT8 numerics), and QAT and the second export run for real.
    monkeypatch.setattr(pipeline.sweep, "int8_missed", lambda export: export.ok)
    settings = SweepSettings(export_args=EXPORT_ARGS, bench=False, qat=True, qat_args="--epochs 1 --calib-images 32")
    row = sweep(cfg, STUDENTS[:1], settings).students[0]
    assert row.export_ptq.ok and row.qat.ok and row.export.ok, row
    assert Path(row.qat.output, "qat.json").is_file() and row.export.output.endswith("-qat")
    manifest = json.loads(Path(row.export.output, "manifest.json").read_text())
    methods = {a["file"]: a["quantization"]["method"] for a in manifest["artifacts"] if a.get("quantization")}
    assert methods == {"model.int8.onnx": "qat", "model.int8.trt.onnx": "qat"}
    assert manifest["options"]["qat"] == row.qat.output and not row.qat.reused
    again = sweep(cfg, STUDENTS[:1], settings).students[0]
    assert again.qat.reused and again.export.reused  # same checkpoint, same options: nothing redone


def _export(*artifacts: tuple[str, str, bool | None]) -> StageRun:
    figures = tuple(ArtifactFigures(file, precision, 0.5, within) for file, precision, within in artifacts)
    return StageRun("python -m export ...", "bundle", 1.0, False, artifacts=figures)


def test_which_exports_count_as_an_int8_miss():
    fp32, int8 = ("model.onnx", "fp32", True), ("model.int8.onnx", "int8", True)
    assert not int8_missed(_export(fp32, int8))
    assert int8_missed(_export(fp32, int8, ("model.int8.trt.onnx", "int8", False)))
    assert not int8_missed(_export(fp32, ("model.fp16.onnx", "fp16", False)))

    def failed(exc: Exception) -> StageRun:
        def raise_it():
            raise exc
        return StageRun("python -m export ...", None, 0.0, False, attempt(raise_it))

    # the miss is told apart by the exception's type, whatever its message says
    missed = failed(BudgetError("no recipe met the accuracy budget", "| table |"))
    assert missed.failure.error == "BudgetError" and missed.failure.exit == 3 and int8_missed(missed)
    assert not int8_missed(failed(UserError("error: no INT8 recipe for model.int8.onnx met the accuracy budget")))
    crash = failed(RuntimeError("model.int8.onnx is not an INT8 Q/DQ graph"))
    assert crash.failure == Failure("RuntimeError", 1, "RuntimeError: model.int8.onnx is not an INT8 Q/DQ graph")
    assert not int8_missed(crash)


def test_a_failed_export_is_a_row_that_says_why(tmp_path):
    (tmp_path / "best.pt").write_bytes(b"not a checkpoint")
    row = export_student(tmp_path / "best.pt", tmp_path / "bundle", ExportOptions(backends=("int8",)), "--int8")
    assert row.failure.error == "UserError" and row.failure.exit == 2 and row.output is None
    assert "cannot be loaded safely" in row.failure.reason and not (tmp_path / "bundle").exists()


def test_stage_options_are_checked_before_any_work():
    with pytest.raises(UserError, match="--export-args must include --int8"):
        SweepSettings(qat=True, export_args="--fp16")
    with pytest.raises(UserError, match=r"--export-args '--int9'.*unrecognized arguments: --int9"):
        SweepSettings(export_args="--int9")
    with pytest.raises(UserError, match="--bench-args.*--seconds"):
        SweepSettings(bench_args="--seconds soon")
    with pytest.raises(UserError, match="the sweep sets --out itself"):
        SweepSettings(bench_args="--out elsewhere")
    with pytest.raises(UserError, match="the sweep sets --out itself"):
        SweepSettings(export_args="--int8 --out bundles/x")
    with pytest.raises(UserError, match="the sweep sets --overwrite itself"):
        SweepSettings(export_args="--int8 --overwrite")
    with pytest.raises(UserError, match="--qat-args.*--epochs"):
        SweepSettings(qat=True, qat_args="--epochs 0")
    settings = SweepSettings(export_args="--int8 --calib-images 64", bench_args="--batch 1,4", budget_ms=2)
    assert settings.export_options.backends == ("int8",) and settings.export_options.calib_images == 64
    assert settings.export_options.overwrite  # a sweep replaces its own bundles
    assert settings.bench_settings.batches == (1, 4) and settings.bench_settings.budget_ms == 2


def test_students_are_named_once_and_checked_before_any_work(tmp_path, capsys):
    assert split_students(["student.arch=resnet18, timm:convnext_atto", "train.epochs=1"]) == (
        ["resnet18", "timm:convnext_atto"], ["train.epochs=1"])
    with pytest.raises(UserError, match="name the students"):
        split_students(["train.epochs=1"])
    with pytest.raises(UserError, match="names a student twice"):
        split_students(["student.arch=resnet18,resnet18"])
    with pytest.raises(SystemExit) as exc:
        cli(["sweep", "--config", str(REPO / "configs" / "demo.yaml"), "student.arch=resnet18,timm:mobilenetv4_small",
             "--bench-args", "--seconds 0.5", "--train.epochs", "1", f"train.out_dir={tmp_path}"])  # both spellings
    assert exc.value.code == 2 and "did you mean timm:mobilenetv4_conv_small" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before the cache, training or any folder
    with pytest.raises(SystemExit) as exc:
        cli(["swep"])
    assert exc.value.code == 2 and "unknown command 'swep': choose one of sweep" in capsys.readouterr().err
