"""Seed-paired comparison: one teacher cache for every seed and student, diagnostics in results."""
import json
from pathlib import Path

import pytest

import distill.cache as cache_mod
import distill.train as train_mod
from distill.__main__ import cli
from distill.cache_ready import cache_folder
from distill.compare import compare, parse_seeds
from distill.config import load_config, with_overrides
from distill.data import load_dataset
from formats.errors import UserError
from tests.conftest import REPO, demo_overrides


@pytest.fixture(scope="module")
def compared(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    cfg = load_config(REPO / "configs" / "demo.yaml", demo_overrides(synthetic_root, out, **{
        "train.epochs": 1, "teacher.cache_views": 2, "teacher.cache_shard_size": 100, "train.name": "cmp",
        "method.anchors": "calibrated", "method.visual": "projected"}))
    builds = []
    real = cache_mod.build_cache
    cache_mod.build_cache = lambda c, *a, **k: builds.append(c.teacher.cache) or real(c, *a, **k)
    try:
        summary = compare(cfg, [0, 1])
    finally:
        cache_mod.build_cache = real
    return cfg, summary, builds


def test_compare_pairs_baseline_and_kd_per_seed_with_one_cache(compared):
    cfg, summary, builds = compared
    root = Path(cfg.train.out_dir) / cfg.train.name
    # built once, at the default folder keyed by the setup (the one a plain run uses), read by both seeds
    assert builds == [str(cache_folder(cfg, load_dataset(cfg.data)))]
    assert Path(builds[0]).parent == Path(cfg.train.out_dir) / "teacher-cache" and summary["cache_build_s"] > 0
    assert set(summary["arms"]) == {"baseline", "kd"} and summary["seeds"] == [0, 1]
    kd = summary["arms"]["kd"]
    runs = {(r["arm"], r["seed"]): r for r in summary["runs"]}
    for seed in (0, 1):
        diff = runs["kd", seed]["test_top1"] - runs["baseline", seed]["test_top1"]
        assert kd["diff_to_baseline"]["per_seed"][str(seed)] == pytest.approx(diff)
    assert kd["test_top1"]["n"] == 2 and kd["test_top1"]["std"] >= 0
    assert json.loads((root / "compare.json").read_text())["arms"]["kd"]["test_top1"] == kd["test_top1"]


def test_kd_results_hold_the_teacher_diagnostics_beside_the_student(compared):
    cfg, summary, _ = compared
    root = Path(cfg.train.out_dir) / cfg.train.name
    kd = json.loads((root / "kd-seed0" / "results.json").read_text())
    teacher = kd["teacher"]
    for key in ("zero_shot_val_top1", "calibrated_val_top1", "linear_probe_val_top1", "anchors",
                "calibration_strength", "calibration_candidates", "calibration_reason", "chance", "warnings"):
        assert key in teacher
    assert teacher["anchors"] in ("text", "calibrated") and len(teacher["calibration_candidates"]) == 6
    # the tiny teacher's anchors were fitted at every strength and the choice is the best on validation
    best = max(teacher["calibration_candidates"], key=lambda c: (c["val_top1"], -c["val_loss"]))
    assert teacher["calibration_strength"] == best["strength"]
    assert teacher["calibrated_val_top1"] == pytest.approx(best["val_top1"])
    losses = {c["strength"]: c["val_loss"] for c in teacher["calibration_candidates"]}
    assert losses[0.01] != losses[None]  # the anchors moved
    assert kd["test"]["images"] > 0 and kd["val"]["images"] > 0
    assert json.loads((root / "baseline-seed0" / "results.json").read_text())["teacher"] is None


def test_finished_comparison_is_reused_and_the_cli_prints_the_table(compared, monkeypatch, capsys):
    cfg, summary, _ = compared

    def no_training(*args, **kwargs):
        raise AssertionError("finished runs must be reused")

    monkeypatch.setattr(train_mod, "fit", no_training)
    overrides = [f"{k}={v}" for k, v in demo_overrides(cfg.data.root, cfg.train.out_dir, **{
        "train.epochs": 1, "teacher.cache_views": 2, "teacher.cache_shard_size": 100, "train.name": "cmp",
        "method.anchors": "calibrated", "method.visual": "projected"}).items()]
    cli(["compare", "--config", str(REPO / "configs" / "demo.yaml"), "--seeds", "0,1", *overrides])
    captured = capsys.readouterr()
    out = captured.out
    assert "baseline" in out and "vs baseline" in out and "compare.json" in out
    # the run times say what they cover: the cache was there, so nothing was built
    assert "run s: training and evaluation, without the teacher cache (reused from an earlier run)" in out
    assert "compare: kd seed 1: finished before, reused" in captured.err


def test_one_cache_serves_other_seeds_and_students(compared, monkeypatch):
    cfg, _, _ = compared
    # a plain run of the same setup (no cache option) reuses the comparison's cache: nothing is built
    monkeypatch.setattr(cache_mod, "build_cache", lambda *a, **k: pytest.fail("the cache must be reused"))
    other = with_overrides(cfg, {"train.seed": 7, "student.arch": "mobilenet_v3_small",
                                 "train.name": "other-student"})
    assert other.teacher.cache == "auto"
    run = train_mod.setup(other)
    assert Path(run.cfg.teacher.cache).parent == Path(cfg.train.out_dir) / "teacher-cache"
    assert run.train_set.sampler.seed == cfg.teacher.cache_seed != 7  # the student replays the cached views
    best = train_mod.fit(other)  # the fingerprint knows neither train.seed nor the student
    assert json.loads((best.parent / "results.json").read_text())["teacher"]["anchors"] in ("text", "calibrated")


def test_seeds_are_parsed_strictly():
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds((3, 4)) == [3, 4] and parse_seeds(5) == [5]
    with pytest.raises(UserError, match="not a list of integers"):
        parse_seeds("0,a")
    with pytest.raises(UserError, match="each once"):
        parse_seeds("1,1")


def test_a_finished_run_of_another_setup_is_never_reused(compared):
    cfg, _, _ = compared
    with pytest.raises(UserError, match="holds a finished run of another setup: pass a new train.name"):
        compare(with_overrides(cfg, {"method.w_ling": 0.5}), [0])


def test_compare_needs_a_kd_config(compared):
    cfg, _, _ = compared
    with pytest.raises(UserError, match="pass a KD config"):
        compare(with_overrides(cfg, {"teacher.enabled": False}), [0])


def test_a_run_recorded_before_a_config_key_existed_is_still_this_setup(compared):
    from distill.compare import same_setup
    from distill.config_parse import to_dict
    cfg, _, _ = compared
    current = to_dict(cfg)
    older = to_dict(cfg)
    del older["data"]["check_images"], older["train"]["select"]  # keys added to the config since
    assert same_setup(older, current)  # the new keys hold their defaults
    assert not same_setup(older, to_dict(with_overrides(cfg, {"train.select": "last"})))
    assert same_setup(current, to_dict(with_overrides(cfg, {"data.num_workers": 3, "train.progress": True})))
    assert not same_setup(current, to_dict(with_overrides(cfg, {"method.w_ling": 0.5})))
    assert not same_setup(None, current)
    off = to_dict(with_overrides(cfg, {"teacher.enabled": False}))  # a teacher-off run reads no teacher or method key
    assert same_setup(off, to_dict(with_overrides(cfg, {"teacher.enabled": False, "method.w_ling": 0.5,
                                                        "teacher.cache_views": 2})))
    assert not same_setup(off, to_dict(with_overrides(cfg, {"teacher.enabled": False, "train.lr": 0.5})))
    assert not same_setup(off, current)
    # where a cache lies is not the setup (its fingerprint is); reading one or running the teacher online is
    assert same_setup(current, to_dict(with_overrides(cfg, {"teacher.cache": "/elsewhere/cache"})))
    assert not same_setup(current, to_dict(with_overrides(cfg, {"teacher.cache": "online"})))
    # a run without a pool reads no pool key: a recipe change there keeps it; with a pool, it does not
    assert not cfg.data.unlabeled
    assert same_setup(older, to_dict(with_overrides(cfg, {"data.unlabeled_student_view": "fresh",
                                                          "method.w_unlabeled": 1.0})))
    pooled = with_overrides(cfg, {"data.unlabeled": "pool"})
    assert not same_setup(to_dict(pooled), to_dict(with_overrides(pooled, {"data.unlabeled_student_view": "fresh"})))
    assert not same_setup(current, to_dict(pooled))
