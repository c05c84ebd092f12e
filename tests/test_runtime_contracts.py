"""bench.json and frontier.json as records (formats.bench, formats.frontier): strict both ways, a
round trip that loses nothing, the settings recorded as they were given, and the docs' examples."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from formats.bench import (BenchBundle, BenchData, BenchReport, BenchRow, DropHere, Latency, ModelInput, OfflinePoint,
                           Recorded, read_bench)
from formats.bench_setup import BenchRequest, DeviceInfo, GpuInfo, JetsonInfo, SoftwareVersions
from formats.errors import UserError
from formats.frontier import BudgetPick, Frontier, FrontierRow, read_frontier
from formats.records import from_dict, to_dict
from runtime.settings import BenchSettings

REPO = Path(__file__).resolve().parents[1]
LAT = Latency(p50_ms=1.2, p90_ms=1.5, p99_ms=2.0, mean_ms=1.3, min_ms=1.0, iterations=120, p99_reliable=True)
DEVICE = DeviceInfo("jetson", "Linux-5.15-tegra-aarch64", "aarch64", "ARMv8 Processor rev 1 (v8l)", 6, 7.4,
                    "arm64-dotprod", (GpuInfo("Orin", "540.2", "7620 MiB", "306 MHz", "918 MHz", "[N/A]"),),
                    JetsonInfo("# R36 (release), REVISION: 3.0", "NV Power Mode: 15W", {"cpu0": 1510400000}))
SOFTWARE = SoftwareVersions("3.10.12", "1.26.4", "10.3.0", "1.18.0", ("CPUExecutionProvider",), "10.3.0", None, None)
ROW = FrontierRow("demo", "resnet18", "model.int8.onnx", "onnxruntime-cpu", "int8", 0.71, "measured (--data)",
                  1.2, 1.5, 800.0, 11.3, True, True)


def report() -> BenchReport:
    """A report with every kind of field filled: nested records, lists, maps, nulls."""
    ok = BenchRow("model.int8.onnx", "onnxruntime-cpu", "int8", "onnxruntime-cpu", 11.3, "ok", None,
                  device="CPUExecutionProvider", load_s=0.2, single_stream=LAT,
                  offline=(OfflinePoint(8, 800.0, LAT, None), OfflinePoint(64, None, None, "over the bundle's max_batch 32")),
                  best_fps=800.0, best_batch=8, baseline_rss_mb=80.5, peak_rss_mb=120.0, power_mw=5123.0, top1=0.71,
                  images=300, recorded=Recorded(0.72, 0.8, 1.1, {"isa": "arm64-dotprod", "cpu": "c", "machine": "m",
                                                                 "engine": "onnxruntime"}),
                  here=DropHere(1.0, 1.4, 300, "arm64-dotprod"), differs=False)
    skipped = BenchRow("model.fp16.onnx", None, "fp16", "gpu", 22.4, "skipped", "skipped: target gpu needs ...")
    return BenchReport("vl2lite-bench", 2, "2025-01-01T00:00:00Z",
                       BenchBundle("bundles/demo", "demo", "resnet18", ModelInput("input", (-1, 3, 224, 224), "float32")),
                       DEVICE, SOFTWARE, BenchSettings(data=Path("data/birds"), budget_ms=2.0).record(),
                       BenchData("data/birds", 300, "exact", "model.onnx on onnxruntime-cpu", None), (ok, skipped),
                       BudgetPick(2.0, True, ROW, "most accurate within 2 ms ..."))


def test_bench_json_round_trips_exactly(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(to_dict(report())))
    assert read_bench(path) == report()
    assert to_dict(read_bench(path)) == json.loads(path.read_text())  # nothing dropped or renamed
    assert json.loads(path.read_text())["results"][1]["here"] is None  # every key written, null when absent


def test_frontier_json_round_trips_exactly(tmp_path: Path) -> None:
    frontier = Frontier("vl2lite-frontier", 2, "2025-01-01T00:00:00Z", DEVICE, BenchSettings().record(),
                        {"demo": "bundles/demo"}, (ROW, dataclasses.replace(ROW, bundle="b", frontier=False)), None)
    path = tmp_path / "frontier.json"
    path.write_text(json.dumps(to_dict(frontier)))
    assert read_frontier(path) == frontier and to_dict(read_frontier(path)) == json.loads(path.read_text())


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["results"][0].update(latency_ms=1), r"bench.json: results\[0\] has an unknown field 'latency_ms'"),
    (lambda d: d["results"][0]["single_stream"].pop("p90_ms"), r"results\[0\]: single_stream lacks the field 'p90_ms'"),
    (lambda d: d["device"]["gpus"][0].update(name=3), r"device: gpus\[0\]: name must be str, not int"),
    (lambda d: d["settings"].update(batches=[1, True]), r"settings: batches\[1\] must be int, not bool"),
    (lambda d: d["results"][0]["offline"][0].update(latency=[]), r"offline\[0\]: latency must be a JSON object, not list"),
    (lambda d: d["bundle"]["input"].pop("dtype"), r"bundle: input lacks the field 'dtype'"),
    (lambda d: d.pop("budget"), "lacks the field 'budget'"),
    (lambda d: d.update(schema_version=1), "has schema version 1, this toolkit reads 2"),
    (lambda d: d.update(schema="vl2lite-frontier"), "is not a vl2lite-bench file"),
    (lambda d: d["results"][1].update(status="done"), "status 'done' is not one of ok, skipped, failed"),
])
def test_a_bench_json_that_is_not_exactly_the_record_is_one_error(tmp_path: Path, edit, message) -> None:
    d = to_dict(report())
    edit(d)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(d))
    with pytest.raises(UserError, match=message) as e:
        read_bench(path)
    assert str(path) in str(e.value) or "bench row" in str(e.value)


def test_a_frontier_json_refuses_a_mistyped_row(tmp_path: Path) -> None:
    frontier = Frontier("vl2lite-frontier", 2, "t", DEVICE, BenchSettings().record(), {}, (ROW,), None)
    d = to_dict(frontier)
    d["rows"][0]["top1"] = "71%"
    (tmp_path / "frontier.json").write_text(json.dumps(d))
    with pytest.raises(UserError, match=r"frontier.json: rows\[0\]: top1 must be float, not str"):
        read_frontier(tmp_path / "frontier.json")
    with pytest.raises(UserError, match="frontier.json is missing: benchmark the bundles again"):
        read_frontier(tmp_path / "nowhere" / "frontier.json")


def test_bench_settings_are_recorded_field_for_field() -> None:
    """The record (bench.json's settings, the worker's request) has exactly BenchSettings' fields but
    ``verbose``, which changes no figure (the worker gets it through its environment)."""
    recorded = [f.name for f in dataclasses.fields(BenchSettings) if f.name != "verbose"]
    assert recorded == [f.name for f in dataclasses.fields(BenchRequest)]
    settings = BenchSettings(backends=("onnxruntime-cpu",), batches=(1, 4), data=Path("d"), out=Path("o"),
                             reference_checkpoint=Path("best.pt"), limit=9, budget_ms=2.5, decode="exact")
    record = from_dict(BenchRequest, json.loads(json.dumps(to_dict(settings.record()))), "request", "")
    assert record.data == "d" and BenchSettings.from_record(record) == settings


def _doc_examples(schema: str) -> list[dict]:
    """Every JSON block of docs/*.md that is a file of ``schema``."""
    found = []
    for doc in sorted((REPO / "docs").glob("*.md")):
        for block in re.findall(r"```json\n(.*?)```", doc.read_text(), re.S):
            if f'"schema": "{schema}"' in block:
                found.append(json.loads(block))
    return found


@pytest.mark.parametrize("schema, cls", [("vl2lite-bench", BenchReport), ("vl2lite-frontier", Frontier)])
def test_the_docs_examples_are_valid_files(schema: str, cls: type) -> None:
    examples = _doc_examples(schema)
    assert examples, f"docs/runtime.md must show a {schema} example"
    for example in examples:
        assert to_dict(from_dict(cls, example, f"docs example of {schema}", "fix the docs")) == example
