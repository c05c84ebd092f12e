"""The teacher cache is the default: built once at a folder keyed by the setup, reused, online only on request."""
from pathlib import Path

import pytest

import distill.cache as cache_mod
from distill.__main__ import cli
from distill.cache_key import fingerprint_fields
from distill.config import load_config, with_overrides
from distill.data import load_dataset
from distill.train import fit, setup
from formats.cache import fingerprint
from formats.errors import UserError
from tests.conftest import REPO, demo_overrides


def demo(root, out, **extra):
    return load_config(REPO / "configs" / "demo.yaml", demo_overrides(root, out, **{
        "train.epochs": 1, "teacher.cache_views": 2, **extra}))


def folders(out: Path) -> list[Path]:
    return sorted((out / "teacher-cache").iterdir()) if (out / "teacher-cache").is_dir() else []


def test_a_kd_run_builds_the_default_cache_once_and_later_runs_reuse_it(synthetic_root, tmp_path, capsys,
                                                                        monkeypatch):
    cfg = demo(synthetic_root, tmp_path, **{"train.name": "first"})
    assert cfg.teacher.cache == "auto"  # no cache option given
    fit(cfg)
    err = capsys.readouterr().err
    expected = tmp_path / "teacher-cache" / fingerprint(fingerprint_fields(cfg, load_dataset(cfg.data)))[:16]
    assert folders(tmp_path) == [expected] and (expected / "meta.json").is_file()
    assert "teacher cache: built in " in err and f", {expected} (210 images x 2 views)" in err
    assert "teacher cache: started (420 views)" in err and "teacher cache: done, 420 views in " in err  # progress

    # another seed and student of the same setup: the same folder, read, never built again
    monkeypatch.setattr(cache_mod, "build_cache", lambda *a, **k: pytest.fail("the cache must be reused"))
    again = with_overrides(cfg, {"train.name": "second", "train.seed": 3, "student.arch": "mobilenet_v3_small"})
    run = setup(again)
    assert Path(run.cfg.teacher.cache) == expected and run.num_views == 2
    assert f"teacher cache: reused, {expected} (210 images x 2 views)" in capsys.readouterr().err
    monkeypatch.undo()

    # a changed setup gets a folder of its own: built beside the first, never refused
    other = with_overrides(cfg, {"train.name": "third", "teacher.cache_views": 3})
    fit(other)
    assert len(folders(tmp_path)) == 2 and "teacher cache: built in " in capsys.readouterr().err


def test_online_is_an_explicit_choice_and_builds_nothing(synthetic_root, tmp_path, capsys):
    cfg = demo(synthetic_root, tmp_path, **{"teacher.cache": "online"})
    run = setup(cfg)
    assert run.num_views == 0 and run.train_set.sampler.seed == cfg.train.seed  # a fresh view every epoch
    assert folders(tmp_path) == []
    assert "teacher: online (teacher.cache=online), it runs on every training step" in capsys.readouterr().err
    baseline = setup(demo(synthetic_root, tmp_path, **{"teacher.enabled": False, "train.name": "base"}))
    assert baseline.targets is None and folders(tmp_path) == []  # the baseline needs no teacher and no cache


def test_an_empty_cache_or_zero_views_says_what_to_pass(synthetic_root, tmp_path):
    with pytest.raises(UserError, match=r"teacher\.cache: is empty: leave it out .* teacher\.cache=online"):
        demo(synthetic_root, tmp_path, **{"teacher.cache": ""})
    with pytest.raises(UserError, match=r"teacher\.cache_views: must be >= 1 .* pass teacher\.cache=online"):
        demo(synthetic_root, tmp_path, **{"teacher.cache_views": 0})


def test_the_cache_command_builds_the_folder_training_reads(synthetic_root, tmp_path, capsys):
    args = ["cache", "--config", str(REPO / "configs" / "demo.yaml"),
            *(f"{k}={v}" for k, v in demo_overrides(synthetic_root, tmp_path, **{"teacher.cache_views": 2}).items())]
    folder = cli(args)
    assert [Path(folder)] == folders(tmp_path)
    assert "teacher cache: built in " in capsys.readouterr().out
    assert cli(args) == folder and f"teacher cache: reused, {folder}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli([*args, "teacher.cache=online"])
    assert exc.value.code == 2 and "no teacher cache to build" in capsys.readouterr().err
