"""formats: checkpoint metadata checked before any work, older files still read, one schema checker."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from formats.accuracy import Budget, BudgetVerdict
from formats.bundle import load_bundle
from formats.checkpoint import StudentMeta
from formats.errors import UserError
from formats.manifest import Manifest
from students.checkpoint import load_student
from students.registry import create_student

PRE = {"input_size": [32, 32], "resize_size": 36, "resize_policy": "shorter_side", "crop": "center",
       "interpolation": "bilinear", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "color": "RGB",
       "layout": "NCHW", "scale": 255.0}
DATA = {"name": "imagefolder", "root": "data/x", "split_seed": 0, "val_fraction": 0.1, "label_names": ""}


def checkpoint(**changes) -> dict:
    student = create_student("resnet18", 3)
    ckpt = {"schema": "vl2lite-student", "schema_version": 1, "arch": "resnet18", "num_classes": 3,
            "class_names": ["a", "b", "c"], "feature_dim": student.feature_dim, "state_dict": student.state_dict(),
            "preprocessing": PRE, "dataset": DATA, "config": {"data": DATA}, "metrics": {}, "epoch": 1}
    ckpt.update(changes)
    return {k: v for k, v in ckpt.items() if v is not None}


def test_metadata_is_typed_and_checked() -> None:
    meta = StudentMeta.from_checkpoint(checkpoint(), "best.pt")
    assert (meta.arch, meta.num_classes, meta.input_size, meta.dataset.name) == ("resnet18", 3, (32, 32), "imagefolder")
    val = {"top1": 0.5, "top5": 1.0, "loss": 0.7, "images": 4}
    assert StudentMeta.from_checkpoint(checkpoint(metrics={"val": val}), "best.pt").metrics.val.top1 == 0.5


def test_checkpoints_written_before_the_dataset_record_read_it_from_their_config() -> None:
    meta = StudentMeta.from_checkpoint(checkpoint(dataset=None), "old.pt")
    assert meta.dataset.root == "data/x" and meta.dataset.val_fraction == 0.1


@pytest.mark.parametrize("changes, message", [
    ({"arch": None}, "lacks 'arch'"),
    ({"num_classes": "3"}, "'num_classes' must be int, not str"),
    ({"num_classes": True}, "'num_classes' must be int, not bool"),
    ({"class_names": ["a", "b"]}, "num_classes is 3 but class_names has 2 names"),
    ({"preprocessing": None}, "lacks 'preprocessing'"),
    ({"preprocessing": {**PRE, "interpolation": "lanczos"}}, "interpolation 'lanczos' is not one of"),
    ({"state_dict": [1, 2]}, "'state_dict' must be dict, not list"),
    ({"dataset": None, "config": {}}, "lacks dataset \\(and config.data\\)"),
    ({"dataset": {"name": "cub"}}, "lacks data.root"),
    ({"schema_version": 2}, "schema version 2, this toolkit reads 1"),
    ({"metrics": {"val": {"top1": "high", "top5": 1.0, "loss": 0.1, "images": 4}}}, "metrics: val: top1 must be float"),
    ({"metrics": {"val": {"top1": 0.5}}}, "metrics: val lacks the field 'top5'"),
    ({"metrics": {"dev": {}}}, "metrics has an unknown field 'dev'"),
])
def test_a_wrong_checkpoint_is_one_error_naming_the_field(changes, message) -> None:
    with pytest.raises(UserError, match=message):
        StudentMeta.from_checkpoint(checkpoint(**changes), "best.pt")


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path: Path) -> None:
    ckpt = checkpoint()
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("classifier.")}
    torch.save(ckpt, tmp_path / "cut.pt")
    with pytest.raises(UserError, match="its weights do not fit a resnet18 with 3 classes .*classifier.weight"):
        load_student(tmp_path / "cut.pt")
    torch.save(checkpoint(feature_dim=7), tmp_path / "dim.pt")
    with pytest.raises(UserError, match="feature_dim 7 does not match resnet18"):
        load_student(tmp_path / "dim.pt")
    torch.save(checkpoint(), tmp_path / "ok.pt")
    student, meta = load_student(tmp_path / "ok.pt")
    assert student(torch.zeros(1, 3, 32, 32)).shape == (1, 3) and meta.class_names == ("a", "b", "c")


def test_a_bundle_written_before_budget_verdicts_still_loads(exported_bundle: Path, tmp_path: Path) -> None:
    """Schema 1 as export wrote it before verdicts: INT8 had a top-level within_budget, no budget entry."""
    old = tmp_path / "old"
    shutil.copytree(exported_bundle, old)
    manifest = json.loads((old / "manifest.json").read_text())
    for art in manifest["artifacts"]:
        verdict = art.pop("budget")
        if art["precision"] == "int8":
            art["within_budget"] = verdict["within_budget"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    bundle = load_bundle(old)
    assert bundle.artifacts and all(a.within_budget is None for a in bundle.artifacts)  # absent, not guessed
    assert Manifest.from_dict(manifest, "old").artifacts[0].budget is None


def test_the_one_budget_rule() -> None:
    budget = Budget(max_top1_drop=1.0, min_agreement=0.9)
    assert budget.verdict("val", 60, 1.0, 0.95).within_budget
    assert not budget.verdict("val", 60, 1.01, 0.95).within_budget
    assert not budget.verdict("val", 60, 0.0, 0.85).within_budget  # agreement counts too
    assert budget.verdict("val", 60, -2.0, 0.9) == BudgetVerdict("val", 60, -2.0, 0.9, True)


@dataclass(frozen=True)
class Item:
    name: str


@dataclass(frozen=True)
class Holder:
    tags: tuple[str, ...]
    items: tuple[Item, ...]
    ratio: float | None = None


def test_the_schema_checker_reads_lists_of_plain_values_and_of_dataclasses() -> None:
    from formats.schema import typed

    got = typed(Holder, {"tags": ["a", "b"], "items": [{"name": "x"}], "ratio": 1}, "h.json")
    assert got == Holder(("a", "b"), (Item("x"),), 1.0)
    with pytest.raises(UserError, match=r"h.json: tags\[1\] must be str, not int"):
        typed(Holder, {"tags": ["a", 2], "items": []}, "h.json")
    with pytest.raises(UserError, match=r"h.json: items\[0\] lacks the field 'name'"):
        typed(Holder, {"tags": [], "items": [{}]}, "h.json")


@dataclass(frozen=True)
class Leaf:
    value: int


@dataclass(frozen=True)
class Branch:
    leaf: Leaf
    leaves: tuple[Holder, ...]
    maybe: Leaf | None = None


def test_nested_records_are_read_strictly_at_any_depth_and_written_back() -> None:
    from formats.records import from_dict, plain, to_dict

    d = {"leaf": {"value": 1}, "leaves": [{"tags": ["a"], "items": [{"name": "x"}]}]}
    got = from_dict(Branch, d, "b.json")
    assert got == Branch(Leaf(1), (Holder(("a",), (Item("x"),)),))
    assert plain(got) == d  # None fields left out (absent)...
    assert to_dict(got) == {**d, "maybe": None, "leaves": [{"tags": ["a"], "items": [{"name": "x"}], "ratio": None}]}
    assert from_dict(Branch, to_dict(got), "b.json") == got  # ...or written as null: both read back
    with pytest.raises(UserError, match="b.json: leaf: value must be int, not str"):
        from_dict(Branch, {**d, "leaf": {"value": "1"}}, "b.json")
    with pytest.raises(UserError, match=r"b.json: leaves\[0\]: items\[0\] has an unknown field 'nam'"):
        from_dict(Branch, {**d, "leaves": [{"tags": [], "items": [{"nam": "x"}]}]}, "b.json")
    with pytest.raises(UserError, match="b.json: maybe lacks the field 'value'"):
        from_dict(Branch, {**d, "maybe": {}}, "b.json")


def test_the_schema_checker_reads_dict_values_and_unions_member_by_member() -> None:
    """``dict[str, V]`` values are checked one by one (naming the key); ``str | int | float | bool | None``
    takes the first member a value is, so a float is not refused as 'not str'."""
    from dataclasses import dataclass

    from formats.schema import typed

    @dataclass(frozen=True)
    class Probe:
        clocks_hz: dict[str, int]
        options: dict[str, str | int | float | bool | None]

    ok = typed(Probe, {"clocks_hz": {"gpu": 1300}, "options": {"a": 1.5, "b": True, "c": None, "d": "x"}}, "p.json")
    assert ok.options == {"a": 1.5, "b": True, "c": None, "d": "x"} and ok.clocks_hz == {"gpu": 1300}
    with pytest.raises(UserError, match="p.json: clocks_hz: gpu must be int, not str"):
        typed(Probe, {"clocks_hz": {"gpu": "fast"}, "options": {}}, "p.json")
    with pytest.raises(UserError, match="p.json: options: a must be str or int or float or bool, not list"):
        typed(Probe, {"clocks_hz": {}, "options": {"a": [1]}}, "p.json")
