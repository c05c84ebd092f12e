"""docs/bundle.md is checked against the dataclasses that define the bundle."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from formats.accuracy import BudgetVerdict
from formats.manifest import ArtifactEntry, Manifest
from formats.preprocessing import PreprocessSpec

DOC = Path(__file__).resolve().parents[1] / "docs" / "bundle.md"


def _json_block(after: str) -> dict:
    text = DOC.read_text()
    block = re.search(r"```json\n(.*?)```", text[text.index(after):], re.S)
    assert block, f"no JSON example after {after!r} in {DOC.name}"
    return json.loads(block.group(1))


def test_manifest_example_is_a_valid_manifest() -> None:
    m = Manifest.from_dict(_json_block("## manifest.json"), "docs/bundle.md")  # strict: unknown keys refused
    assert {a.file for a in m.artifacts} >= {"model.onnx", "model.int8.onnx"}
    example = _json_block("## manifest.json")
    assert m.to_dict() == example | {"artifacts": example["artifacts"]}  # nothing dropped or renamed


def test_every_manifest_field_is_documented() -> None:
    text = DOC.read_text()
    for cls in (Manifest, ArtifactEntry):
        for f in dataclasses.fields(cls):
            assert f"`{f.name}`" in text or f'"{f.name}"' in text, f"{cls.__name__}.{f.name} is not in {DOC.name}"
    assert all(f"`{f.name}`" in text for f in dataclasses.fields(BudgetVerdict)), "the budget verdict's keys are documented"


def test_preprocessing_example_round_trips() -> None:
    example = _json_block("## preprocessing.json")
    assert PreprocessSpec.from_dict(example).to_dict() == example
