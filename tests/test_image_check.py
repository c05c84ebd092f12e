"""Every image decoded once before training: all unreadable files reported together, before any work."""
import shutil
from pathlib import Path

import pytest

from distill.__main__ import cli
from distill.config import load_config
from distill.train import fit
from formats.errors import UserError
from formats.image_check import check_images
from formats.labels import FileSource
from tests.conftest import REPO, demo_overrides


@pytest.fixture(scope="module")
def damaged(synthetic_root, tmp_path_factory) -> tuple[Path, list[str]]:
    """A copy of the synthetic birds with one truncated, one garbage and one empty image (a missing one
    is refused earlier, by the dataset reader: tests/test_data.py)."""
    root = tmp_path_factory.mktemp("damaged") / "birds"
    shutil.copytree(synthetic_root, root)
    files = sorted((root / "images").rglob("*.jpg"))
    truncated, garbage, empty = files[3], files[40], files[-1]
    truncated.write_bytes(truncated.read_bytes()[:200])
    garbage.write_bytes(b"this is not a JPEG")
    empty.write_bytes(b"")
    return root, [p.name for p in (truncated, garbage, empty)]


def test_check_command_lists_every_unreadable_file(damaged, capsys):
    root, bad = damaged
    with pytest.raises(SystemExit) as exc:
        cli(["check", "--config", str(REPO / "configs" / "demo.yaml"), f"data.root={root}"])
    captured = capsys.readouterr()
    assert exc.value.code == 2
    listed = [line for line in captured.out.splitlines() if "image " in line]
    assert len(listed) == 3 and all(any(name in line for line in listed) for name in bad)
    assert "3 of 320 images cannot be read" in captured.err


def test_check_command_passes_a_clean_dataset(synthetic_root, capsys):
    cli(["check", "--config", str(REPO / "configs" / "demo.yaml"), f"data.root={synthetic_root}"])
    assert "all 320 images decode" in capsys.readouterr().out


def test_training_refuses_before_epoch_one_naming_all_of_them(damaged, tmp_path):
    root, bad = damaged
    cfg = load_config(REPO / "configs" / "demo.yaml", demo_overrides(root, tmp_path, **{"train.name": "bad"}))
    with pytest.raises(UserError) as exc:
        fit(cfg)
    assert "3 of 320 images cannot be read" in str(exc.value) and all(name in str(exc.value) for name in bad)
    assert "data.check_images=false" in str(exc.value)
    assert not (tmp_path / "bad" / "last.pt").exists()  # nothing trained, nothing that looks like a run


def test_check_collects_errors_of_any_source_and_caps_the_message(tmp_path):
    paths = [tmp_path / f"{i}.jpg" for i in range(12)]
    for p in paths:
        p.write_bytes(b"x")
    report = check_images({"train": FileSource(paths, [0] * 12)}, workers=3)
    assert report.images == 12 and len(report.problems) == 12
    with pytest.raises(UserError, match=r"12 of 12 images cannot be read: .*; and 2 more\. fix it"):
        report.raise_if_bad("fix it")
