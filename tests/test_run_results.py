"""results.json and compare_run.json: strict both ways, the documented example parses, older files still read."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from formats.errors import UserError
from formats.records import to_dict
from formats.run_results import (RESULTS_FILE, RUN_RECORD_FILE, RunResults, read_results, read_run_record,
                                 run_record)

DOC = Path(__file__).resolve().parents[1] / "docs" / "training.md"
SPLIT = {"top1": 0.75, "top5": 1.0, "loss": 0.7, "images": 60}
CONFIG = {"data": {"root": "data/x", "prompts": ["a photo of a {}."], "mean": [0.5, 0.5, 0.5]},
          "teacher": {"enabled": True, "cache": "auto"}, "train": {"epochs": 2, "lr": 0.001, "seed": 0}}


def _example() -> dict:
    text = DOC.read_text()
    block = re.search(r"```json\n(.*?)```", text[text.index("`results.json` (`formats.run_results"):], re.S)
    assert block, "docs/training.md lost its results.json example"
    return json.loads(block.group(1))


def _write(folder: Path, name: str, d: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(d))
    return folder


def test_the_documented_example_reads_and_writes_back_unchanged(tmp_path) -> None:
    example = _example()
    results = read_results(_write(tmp_path, RESULTS_FILE, example))
    assert results.finished and results.teacher.anchors == "calibrated" and results.unlabeled.dropped_val_test_copies == 0
    assert to_dict(results) == example  # every key written, none renamed
    results.write(tmp_path / "again" / RESULTS_FILE)
    assert read_results(tmp_path / "again") == results


@pytest.mark.parametrize("change, message", [
    (lambda d: d["test"].update(top1="high"), "test: top1 must be float"),
    (lambda d: d["teacher"]["calibration_candidates"][0].pop("val_loss"), r"calibration_candidates\[0\] lacks the field 'val_loss'"),
    (lambda d: d["unlabeled"].update(extra=1), "unlabeled has an unknown field 'extra'"),
    (lambda d: d.update(test=[0.7]), "test must be a JSON object"),
    (lambda d: d.update(schema_version=2), "schema version 2, this toolkit reads 1"),
    (lambda d: d.update(schema="vl2lite-edge/bench"), "is not a vl2lite-edge/run-results file"),
])
def test_a_wrong_results_file_is_one_error_naming_the_key(tmp_path, change, message) -> None:
    example = _example()
    change(example)
    with pytest.raises(UserError, match=message):
        read_results(_write(tmp_path, RESULTS_FILE, example))


def test_a_results_file_written_before_its_schema_still_reads(tmp_path) -> None:
    old = {"best_epoch": 3, "val": SPLIT, "test": {**SPLIT, "images": 1000}, "teacher": None}  # a baseline, no pool
    results = read_results(_write(tmp_path, RESULTS_FILE, old))
    assert results == RunResults(None, None, 3, results.val, results.test) and results.test.images == 1000
    assert results.test.teacher_zero_shot_top1 is None  # absent, never guessed


def _record(**changes) -> dict:
    fields = {"arm": "kd", "seed": 0, "run": "runs/kd-seed0", "test_top1": 0.8, "val_top1": 0.75, "best_epoch": 2,
              "wall_s": 12.5, "resumed": False, "epoch_s": 1.5, "teacher": None, "config": CONFIG}
    return {**fields, **changes}


def test_a_run_record_is_checked_when_made_and_reads_back_equal(tmp_path) -> None:
    record = run_record(**_record())
    assert record.config["data"]["prompts"] == ("a photo of a {}.",) and record.plain_config() == CONFIG
    record.write(tmp_path / RUN_RECORD_FILE)
    assert read_run_record(tmp_path) == record
    with pytest.raises(UserError, match="config: train: lr must be"):
        run_record(**_record(config={"train": {"lr": {"base": 0.1}}}))  # a config value is a scalar or a list
    with pytest.raises(UserError, match="lacks the field 'epoch_s'"):
        run_record(**{k: v for k, v in _record().items() if k != "epoch_s"})


def test_a_run_record_written_before_its_schema_still_reads(tmp_path) -> None:
    old = _record()  # what compare wrote before the schema: the same fields, no header
    assert read_run_record(_write(tmp_path, RUN_RECORD_FILE, old)).test_top1 == 0.8
    with pytest.raises(UserError, match="unknown field 'dev_top1'"):
        read_run_record(_write(tmp_path / "b", RUN_RECORD_FILE, _record(dev_top1=0.7)))
