"""Adding an export backend is one new module: the command line gains its flag, the bundle its
artifact and manifest entry. A module in the backends package that declares no backend is an error."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import export.backends
from export import registry

TOY = '''"""A toy export backend: model.toy.onnx, the FP32 graph marked in its metadata."""
import onnx

from export.evaluation import accuracy_entry, ort_runner, predict
from export.job import Backend, Built


def build(job):
    model = onnx.load(str(job.dir / "model.onnx"))  # written by the FP32 backend, earlier in the order
    model.metadata_props.add(key="toy", value="yes")
    onnx.save(model, str(job.dir / "model.toy.onnx"))
    run = ort_runner(job.dir / "model.toy.onnx")
    pred = predict(run, job.eval_batches)
    return Built((job.entry("model.toy.onnx", "onnx", "fp32", "any", accuracy_entry(pred, job.reference),
                            budget=job.verdict(run, pred)),))


BACKEND = Backend(name="toy", order=50, build=build, help="model.toy.onnx: the FP32 graph, marked")
'''


@pytest.fixture
def extra_backends(tmp_path, monkeypatch):
    """A second folder of the ``export.backends`` package: a module written there is a module of the
    package, as one written into export/backends/ would be."""
    folder = tmp_path / "more_backends"
    folder.mkdir()
    monkeypatch.setattr(export.backends, "__path__", [*export.backends.__path__, str(folder)])
    registry.backends.cache_clear()
    yield folder
    registry.backends.cache_clear()
    for name in [m for m in sys.modules if m.startswith("export.backends.") and m.split(".")[-1] in ("toy", "notes")]:
        del sys.modules[name]


def test_one_new_module_adds_a_backend_with_its_flag_artifact_and_manifest_entry(
        extra_backends: Path, trained_checkpoint: Path, tmp_path: Path, capsys) -> None:
    from export.__main__ import main, parser
    from formats.bundle import verify_bundle
    from formats.manifest import Manifest

    (extra_backends / "toy.py").write_text(TOY)
    assert [b.name for b in registry.backends()] == ["onnx", "fp16", "int8", "trt", "toy", "triton"]  # its order
    assert "model.toy.onnx: the FP32 graph, marked" in " ".join(parser().format_help().split())
    out = tmp_path / "b"
    main([str(trained_checkpoint), "--toy", "--out", str(out), "--eval-images", "16", "--parity-images", "16"])
    assert capsys.readouterr().out.strip() == str(out)
    manifest = Manifest.from_dict(json.loads((out / "manifest.json").read_text()), "manifest.json")
    assert [a.file for a in manifest.artifacts] == ["model.onnx", "model.toy.onnx"]
    toy = manifest.artifacts[1]
    assert toy.within_budget and toy.top1_drop == 0.0 and toy.budget.split == "val"
    assert manifest.options["backends"] == ["toy"]
    verify_bundle(out)  # hashed and listed like every other file


def test_a_module_that_declares_no_backend_fails_loudly(extra_backends: Path) -> None:
    (extra_backends / "notes.py").write_text('"""Helpers that belong elsewhere."""\nLIMIT = 3\n')
    with pytest.raises(TypeError, match=r"notes.py is in the export.backends package but declares no BACKEND"):
        registry.backends()


def test_two_backends_may_not_share_a_name_or_an_order(extra_backends: Path) -> None:
    (extra_backends / "toy.py").write_text(TOY.replace('name="toy", order=50', 'name="toy", order=20'))
    with pytest.raises(TypeError, match="'int8' and 'toy' both declare order 20"):
        registry.backends()
    (extra_backends / "toy.py").write_text(TOY.replace('name="toy"', 'name="int8"'))
    sys.modules.pop("export.backends.toy", None)
    registry.backends.cache_clear()
    with pytest.raises(TypeError, match="two export backends are named 'int8'"):
        registry.backends()
