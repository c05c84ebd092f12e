"""INT8 accuracy budget: the remedy ladder (logic and a real forced run) and the failure path."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from export import BudgetError, ExportOptions, export_bundle
from export.int8.ladder import Attempt, Recipe, chosen_line, describe, format_table, run_ladder

REPO = Path(__file__).resolve().parents[1]
# A first recipe that is deliberately poor (2 calibration images) and a strict criterion (INT8 must
# agree with PyTorch on every validation image): the first attempt misses it on the tiny student.
FORCED = dict(backends=("int8",), calib_images=2, min_calib_images=1, calib_method="entropy", min_agreement=1.0)


@pytest.fixture(scope="module")
def val_heavy_checkpoint(synthetic_root, tmp_path_factory):
    """A student whose validation split is half the training split (120 images): recipes are judged
    there, and 30 images (the default tenth) are too few for the poor first recipe to miss."""
    from distill.config import load_config
    from distill.train import fit
    from tests.conftest import demo_overrides
    overrides = demo_overrides(synthetic_root, tmp_path_factory.mktemp("runs"),
                               **{"train.epochs": 6, "train.name": "valheavy", "data.val_fraction": 0.5})
    return fit(load_config(REPO / "configs" / "demo.yaml", overrides))


def fake_attempts(good: set[Recipe]):
    """An evaluator that accepts only the recipes in ``good``; records the order it was asked."""
    asked = []

    def attempt(r: Recipe) -> Attempt:
        asked.append(r)
        ok = r in good
        return Attempt(r, 0.9 if ok else 0.8, 0.0 if ok else 10.0 - len(asked) * 0.1, 1.0, ok)
    return attempt, asked


def test_ladder_stops_at_first_recipe_within_budget():
    attempt, asked = fake_attempts({Recipe("minmax", 100)})
    done = run_ladder(attempt, Recipe("minmax", 100), 500, ["conv1", "fc"], lambda r: [], 6, True)
    assert asked == [Recipe("minmax", 100)] and done[-1].within_budget


def test_ladder_order_methods_then_images_then_float_nodes():
    winner = Recipe("percentile", 200, ("conv1", "fc", "s1", "s2"))
    attempt, asked = fake_attempts({winner})
    done = run_ladder(attempt, Recipe("minmax", 100), 200, ["conv1", "fc"], lambda r: ["fc", "s1", "s2", "s3"], 6, True)
    assert asked == [
        Recipe("minmax", 100), Recipe("entropy", 100), Recipe("percentile", 100),
        Recipe("percentile", 200),  # the best so far (the fake improves with each attempt) with 2x images
        Recipe("percentile", 200, ("conv1", "fc")), winner]
    assert done[-1].recipe == winner and [a.within_budget for a in done] == [False] * 5 + [True]


def test_ladder_without_remedies_or_beyond_the_cap_fails():
    attempt, asked = fake_attempts(set())
    assert len(run_ladder(attempt, Recipe("minmax", 100), 100, ["a", "b"], lambda r: [], 6, False)) == 1
    done = run_ladder(attempt, Recipe("minmax", 100), 100, ["a", "b"], lambda r: ["c", "d", "e", "f", "g"], 4, True)
    assert not any(a.within_budget for a in done)
    assert max(len(a.recipe.excluded) for a in done) == 4  # never more than max_excluded in float
    assert len(set(a.recipe for a in done)) == len(done)  # no recipe evaluated twice
    table = format_table(done, 1.0)
    assert table.count("\n") == len(done) + 2 and "| no |" in table


def test_the_printed_table_names_the_attempt_each_graph_is():
    winner = Recipe("percentile", 100, ("conv1", "fc"))
    attempt, _ = fake_attempts({winner})
    done = run_ladder(attempt, Recipe("minmax", 100), 100, ["conv1", "fc"], lambda r: [], 6, True)
    title = format_table(done, 1.0, "val", file="model.int8.onnx").splitlines()[0]
    assert title == "INT8 attempts for model.int8.onnx (budget: top-1 drop <= 1 points, judged on val)"
    assert chosen_line(done, "model.int8.onnx") == \
        f"model.int8.onnx: attempt {len(done)} (percentile, 100 images, 2 in float), within budget"
    attempt, _ = fake_attempts(set())  # nothing fits: --best-effort keeps the closest, and says so
    done = run_ladder(attempt, Recipe("minmax", 100), 100, [], lambda r: [], 0, True)
    closest = min(range(len(done)), key=lambda i: done[i].top1_drop)
    assert chosen_line(done, "model.int8.trt.onnx") == (
        f"model.int8.trt.onnx: attempt {closest + 1} ({describe(done[closest].recipe)}), the closest, over budget "
        f"(kept marked: --best-effort)")


def test_remedy_path_on_real_student(val_heavy_checkpoint, tmp_path):
    try:
        out = export_bundle(val_heavy_checkpoint, tmp_path / "b", ExportOptions(**FORCED))
    except BudgetError as err:
        # INT8 numerics differ between CPUs: on some (seen on an Intel Xeon VM) one validation image
        # disagrees with PyTorch under every recipe, so no remedy can reach the strict criterion.
        # The ladder must still have tried every remedy, each recipe once, before giving up.
        rows = [ln for ln in err.detail.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
        assert len(rows) == 7 and all(ln.endswith("| no |") for ln in rows)
        assert len({tuple(ln.split("|")[2:5]) for ln in rows}) == 7  # method, images, kept in float
        pytest.skip("no INT8 recipe agrees with PyTorch on every validation image on this CPU: "
                    "the remedy ladder ran to its end (checked); its success path is not reachable here")
    manifest = json.loads((out / "manifest.json").read_text())
    cpu = next(a for a in manifest["artifacts"] if a["file"] == "model.int8.onnx")
    q = cpu["quantization"]
    assert q["remedies_needed"] >= 1 and len(q["attempts"]) == q["remedies_needed"] + 1
    assert not q["attempts"][0]["within_budget"] and q["attempts"][-1]["within_budget"]
    assert q["selected_on"]["split"] == "val" and q["selected_on"]["agreement"] == 1.0
    last = q["attempts"][-1]
    assert (q["method"], q["calibration_images"], q["excluded_nodes"]) == \
        (last["method"], last["images"], last["excluded_nodes"])


def test_budget_failure_exits_nonzero_with_table_and_writes_no_bundle(val_heavy_checkpoint, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(BudgetError) as err:
        export_bundle(val_heavy_checkpoint, out, ExportOptions(**FORCED, remedies=False))
    assert "| 1 | entropy | 2 |" in err.value.detail and err.value.exit_status == 3
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # --verbose: onnxruntime's own output comes through (on stderr: stdout is only ever the bundle path);
    # tests/test_export_output.py checks that without it, only export's own lines are printed
    cmd = [sys.executable, "-m", "export", str(val_heavy_checkpoint), "--out", str(out), "--int8",
           "--calib-images", "2", "--min-calib-images", "1", "--calib-method", "entropy",
           "--min-agreement", "1.0", "--no-remedies", "--verbose"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "INT8 attempts for model.int8.onnx (budget" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == "" and "Collecting tensor data and making histogram" in proc.stderr  # the entropy calibrator
    lines = proc.stderr.splitlines()
    errors = [i for i, ln in enumerate(lines) if ln.startswith("error:")]
    assert len(errors) == 1 and lines[errors[0]].startswith("error: no INT8 recipe for model.int8.onnx met the accuracy budget")
    table = lines.index(next(ln for ln in lines if ln.startswith("INT8 attempts for model.int8.onnx (budget")))
    assert table < errors[0] and lines[errors[0] - 1].startswith("| 1 | entropy | 2 |")  # the table, then the error
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_best_effort_keeps_an_over_budget_artifact_marked_and_the_runtime_skips_it(val_heavy_checkpoint, tmp_path):
    from formats.bundle import load_bundle
    from runtime.model import select_artifact
    out = export_bundle(val_heavy_checkpoint, tmp_path / "b", ExportOptions(**FORCED, remedies=False, best_effort=True))
    manifest = json.loads((out / "manifest.json").read_text())
    cpu = next(a for a in manifest["artifacts"] if a["file"] == "model.int8.onnx")
    assert cpu["budget"]["split"] == "val" and cpu["budget"]["within_budget"] is False
    assert cpu["quantization"]["attempts"][0]["within_budget"] is False
    manifest["artifacts"].sort(key=lambda a: a["file"] != "model.int8.onnx")  # the over-budget one first
    (out / "manifest.json").write_text(json.dumps(manifest))
    bundle = load_bundle(out, verify=False)
    assert select_artifact(bundle, "onnxruntime-cpu").file == "model.onnx"  # skipped by default...
    assert select_artifact(bundle, "onnxruntime-cpu", "model.int8.onnx").file == "model.int8.onnx"  # ...not by name


def test_calibration_batches_have_one_size():
    """onnxruntime's histogram calibrators fail on a shorter last batch: the reader re-chunks."""
    import numpy as np

    from export.int8.graph import BatchReader
    reader = BatchReader("input", [np.zeros((32, 3, 4, 4), np.float32), np.ones((12, 3, 4, 4), np.float32)])
    assert {b.shape for b in reader.batches} == {(4, 3, 4, 4)}
    stacked = np.concatenate(reader.batches)
    assert stacked.shape[0] == 44 and stacked[:32].sum() == 0 and stacked[32:].min() == 1  # same images, same order
    same = [np.zeros((8, 3, 4, 4), np.float32)] * 3
    assert BatchReader("input", same).batches is not None and len(BatchReader("input", same).batches) == 3


def test_tf_same_padding_stays_exact_in_both_int8_graphs(tmp_path):
    """TF "same" padding computes its pads from the input's shape with float ops (Shape -> Div -> Ceil
    -> ... -> Pad); an 8-bit grid on those small integers shifts the padding (an ImageNet
    EfficientNet-Lite0 lost 27 points that way). The shape arithmetic must stay float."""
    import numpy as np
    import onnx
    import torch
    from timm.layers import create_conv2d

    from export.evaluation import ort_runner
    from export.int8.flavours import CPU, TENSORRT, quantize
    from export.int8.graph import BatchReader, preprocess, shape_nodes
    from export.onnx_file import export_onnx

    torch.manual_seed(0)
    model = torch.nn.Sequential(create_conv2d(3, 8, 3, stride=2, padding="same"), torch.nn.ReLU6(),
                                create_conv2d(8, 8, 3, stride=2, padding="same", depthwise=True), torch.nn.ReLU6(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    export_onnx(model, tmp_path / "fp32.onnx", [33, 33], 17)  # odd size: uneven pads
    preprocess(tmp_path / "fp32.onnx", tmp_path / "pre.onnx")
    graph = onnx.load(str(tmp_path / "pre.onnx")).graph
    arithmetic = set(shape_nodes(graph))
    assert {"Ceil", "Pad"} <= {n.op_type for n in graph.node}  # the padding is computed in the graph
    assert {n.op_type for n in graph.node if n.name in arithmetic} >= {"Ceil"}
    assert not arithmetic & {n.name for n in graph.node if n.op_type in ("Conv", "Gemm", "Pad", "GlobalAveragePool")}
    x = np.random.default_rng(0).uniform(-1, 1, (16, 3, 33, 33)).astype(np.float32)
    fp32 = ort_runner(tmp_path / "pre.onnx")(x)
    for flavour in (CPU, TENSORRT):
        quantize(tmp_path / "pre.onnx", tmp_path / flavour.file, flavour, Recipe("minmax", 16), BatchReader("input", [x]))
        q = onnx.load(str(tmp_path / flavour.file)).graph
        produced_by = {o: n.name for n in q.node for o in n.output}
        quantized = {produced_by.get(n.input[0]) for n in q.node if n.op_type == "QuantizeLinear"}
        assert not quantized & arithmetic, flavour.target  # no Q/DQ on the shape arithmetic
        int8 = ort_runner(tmp_path / flavour.file)(x)
        assert np.abs(int8 - fp32).max() < 0.1 * np.abs(fp32).max(), flavour.target
