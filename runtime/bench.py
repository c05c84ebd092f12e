"""Benchmark a bundle on this device, MLPerf-style: ``python -m runtime.bench <bundle> [options]``.

For every artifact and every backend that can run it here (or those named with ``--backend``):
warm-up, then SingleStream latency at batch 1 (p50/p90/p99 in ms; MLPerf reports p90), Offline
throughput per batch size (images/s), model size, peak memory, top-1 on ``--data`` when given,
and on a Jetson the module input power from tegrastats. Prints one table, writes ``bench.json``
(with the device and software versions) and two PNG plots. With ``--data``, each artifact's top-1
drop against the FP32 model on those images is set beside the manifest's and flagged when the two
differ beyond their intervals (runtime.provenance).

Each (artifact, backend) is measured in a fresh worker process, so one model's memory, threads
and allocator state cannot colour the next one's figures, and "peak memory" is that process's own
peak resident set (ru_maxrss: the interpreter, the runtime libraries and the model, during the
timed runs; the accuracy pass comes after it is read).

This module owns the orchestration and the CLI: which jobs to run, the evaluation data, the
report. The settings live in runtime.bench_settings, the worker process in runtime.bench_worker,
the timing in runtime.measure, the table, JSON and plots in runtime.report.

Options: ``--backend a,b`` ``--artifact f1,f2`` ``--batch 1,8,32`` ``--data DIR`` ``--limit N``
``--seconds S`` (per measurement) ``--warmup N`` ``--threads N`` ``--out DIR`` ``--no-plots``
``--reference-checkpoint best.pt`` (adds a PyTorch eager row when torch is installed)
``--timeout S`` (per artifact and backend; a worker that outlives it becomes a failed row).
``--budget-ms X`` names the most accurate artifact whose SingleStream p50 is within X ms (p90 shown
beside it), never one that export marked over the accuracy budget while another is within it.

Several bundles (``python -m runtime.bench b1 b2 b3 --budget-ms 2``): each is measured as above
into ``<out>/<bundle name>/``, then one table of every bundle and artifact, the accuracy/latency
frontier per precision (``frontier.json``, ``frontier.png``) and the pick within the budget
(runtime.frontier). This runs on the device alone: bundles copied to a Jetson need only the runtime.
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from formats.bundle import Artifact, Bundle, load_bundle
from formats.cli import Positional, parser_for, settings_from
from formats.errors import UserError, run_cli
from formats.files import writable_folder, write_json
from formats.preprocessing import load_input
from runtime.backends import SessionOptions, get_backend, list_backends, require_available
from runtime.bench_settings import BenchSettings, Job, settings_json
from runtime.bench_worker import measure_in_worker
from runtime.dataset import load_labelled_images
from runtime.device import device_info, software_versions
from runtime.frontier import format_frontier, frontier_rows, pick
from runtime.measure import top1_accuracy
from runtime.model import decode_mode
from runtime.plots import plot_frontier
from runtime.provenance import compare_with_manifest, format_comparison, fp32_artifact, reference_row, row_label
from runtime.report import format_table, write_plots

SCHEMA = "vl2lite-bench"
# Backends tried when none is named; onnxruntime-tensorrt is left to an explicit --backend
# because it builds TensorRT engines for minutes on first use.
DEFAULT_BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda", "tensorrt")


def run_bench(bundle_dir: str | Path, settings: BenchSettings = BenchSettings()) -> dict[str, Any]:
    """Measure, print the table, write bench.json and the plots; return the report."""
    bundle = load_bundle(bundle_dir)
    jobs, rows = plan(bundle, settings)
    out = Path(settings.out or Path("runs") / "bench" / bundle.name)
    writable_folder(out, "--out")  # before minutes of measuring
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        data = prepare_data(bundle, settings, Path(tmp)) if settings.data else None
        rows += [measure_in_worker(bundle, job, settings, data, Path(tmp)) for job in jobs]
        if data:  # inside: the FP32 reference may still need the prepared images
            data["fp32_reference"], data["no_reference"] = compare_on_data(bundle, rows, data, settings)
    report = {"schema": SCHEMA, "schema_version": 1,
              "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "bundle": {"path": str(bundle.root), "name": bundle.name, "arch": bundle.arch,
                         "input": bundle.manifest["input"]},
              "device": device_info(), "software": software_versions(), "settings": settings_json(settings),
              "data": {"root": str(settings.data), "images": data["images"], "decode": data["decode"],
                       "fp32_reference": data["fp32_reference"], "no_reference": data["no_reference"] or None}
              if data else None,
              "results": sorted(rows, key=lambda r: r["status"] != "ok")}
    if settings.budget_ms is not None:
        rows = frontier_rows([report], [recorded_top1(bundle)], over_budget=[over_accuracy_budget(bundle)])
        report["budget"] = pick(rows, settings.budget_ms)
    write_json(out / "bench.json", report)
    report["plots"] = write_plots(report["results"], out) if settings.plots else []
    print(format_table(report["results"]))
    if data:
        print(f"\n{format_comparison(report['results'], data['fp32_reference'], data['no_reference'])}")
    if "budget" in report:
        print(f"\n{report['budget']['message']}")
    print(f"\nwrote {out / 'bench.json'}" + "".join(f", {p}" for p in report["plots"] if p.endswith(".png")))
    return report


def recorded_top1(bundle: Bundle) -> dict[str, float]:
    """artifact file -> the test top-1 the export recorded (the frontier's accuracy without --data)."""
    return {a.file: a.top1 for a in bundle.artifacts if a.top1 is not None}


def over_accuracy_budget(bundle: Bundle) -> set[str]:
    """The artifact files export marked over the bundle's accuracy budget (written with --best-effort)."""
    return {a.file for a in bundle.artifacts if a.within_budget is False}


def run_bench_many(bundle_dirs: list[Path], settings: BenchSettings = BenchSettings()) -> dict[str, Any]:
    """Measure every bundle (each into ``<out>/<name>/``), then the frontier table, plot and pick."""
    bundles = [load_bundle(d) for d in bundle_dirs]  # every bundle readable before minutes of measuring
    if settings.artifacts:
        raise UserError("--artifact names files of one bundle: leave it out when benchmarking several bundles")
    if len({b.labels for b in bundles}) > 1:
        print("warning: these bundles classify different label sets, so their top-1 figures come from different "
              "test sets and the frontier compares unlike things: compare students of one task", file=sys.stderr)
    base = Path(settings.out or Path("runs") / "bench" / "frontier")
    names = _unique([b.name for b in bundles])
    reports = []
    for bundle, name in zip(bundles, names):
        print(f"\n== {name} ({bundle.arch}): {bundle.root}")
        reports.append(run_bench(bundle.root, dataclasses.replace(settings, out=base / name, budget_ms=None)))
    rows = frontier_rows(reports, [recorded_top1(b) for b in bundles], names, [over_accuracy_budget(b) for b in bundles])
    summary = {"schema": "vl2lite-frontier", "schema_version": 1,
               "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "device": device_info(),
               "settings": settings_json(settings), "bundles": {n: str(b.root) for n, b in zip(names, bundles)},
               "rows": rows, "budget": pick(rows, settings.budget_ms) if settings.budget_ms is not None else None}
    write_json(base / "frontier.json", summary)
    plot = plot_frontier(rows, base / "frontier.png", settings.budget_ms) if settings.plots and _has_matplotlib() else None
    print("\n" + format_frontier(rows))
    if summary["budget"]:
        print(f"\n{summary['budget']['message']}")
    print(f"\nwrote {base / 'frontier.json'}" + (f", {plot}" if plot else ""))
    return summary


def _unique(names: list[str]) -> list[str]:
    """Bundle names as folder names, a repeated one numbered (two bundles may share a name)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("note: matplotlib is not installed, no frontier plot (pip install matplotlib)")
        return False
    return True


def plan(bundle: Bundle, settings: BenchSettings) -> tuple[list[Job], list[dict[str, Any]]]:
    """(artifact, backend) pairs to measure, and note rows for artifacts nothing here can run."""
    if settings.backends:  # named by the user: each must work here, or it is an error
        usable = [require_available(get_backend(n)).name for n in settings.backends]
    else:
        usable = [n for n in DEFAULT_BACKENDS if get_backend(n).unavailable_reason() is None]
    arts = [bundle.artifact(f) for f in settings.artifacts] if settings.artifacts else list(bundle.artifacts)
    jobs, notes = [], []
    for art in arts:
        runners = [n for n in usable if get_backend(n).accepts(art)]
        jobs += [Job(art.file, n, art.precision, art.target, art.size_bytes or art.path.stat().st_size) for n in runners]
        if not runners:
            notes.append(_note_row(art, f"skipped: target {art.target} needs "
                                        f"{'/'.join(_backends_for(art)) or 'another runtime'}, not selected or "
                                        f"not usable here"))
    if settings.reference_checkpoint:
        ckpt = Path(settings.reference_checkpoint)
        if not ckpt.is_file():
            raise UserError(f"--reference-checkpoint {ckpt} not found: pass the best.pt the bundle came from")
        jobs.append(Job(str(ckpt), "torch-eager", "fp32", "reference", ckpt.stat().st_size))
    return jobs, notes


def _backends_for(art: Artifact) -> list[str]:
    return [n for n in list_backends() if get_backend(n).accepts(art) and n != "onnxruntime"]


def _note_row(art: Artifact, note: str) -> dict[str, Any]:
    return {"artifact": art.file, "backend": None, "precision": art.precision, "target": art.target,
            "status": "skipped", "note": note, "size_mb": round(art.size_bytes / 1e6, 2)}


# --------------------------------------------------------------------------- evaluation data

def prepare_data(bundle: Bundle, settings: BenchSettings, tmp: Path) -> dict[str, Any]:
    """Decode and preprocess the --data images once, into .npy files the workers memory-map."""
    items = load_labelled_images(Path(settings.data), bundle.labels, settings.limit)
    h, w = bundle.preprocessing.input_size
    decode = decode_mode(bundle, settings.decode)
    x = np.lib.format.open_memmap(tmp / "x.npy", mode="w+", dtype=np.float32, shape=(len(items), 3, h, w))
    for i, (path, _) in enumerate(items):
        x[i] = load_input(path, bundle.preprocessing, decode=decode)
    x.flush()
    np.save(tmp / "y.npy", np.array([y for _, y in items], dtype=np.int64))
    return {"x": str(tmp / "x.npy"), "y": str(tmp / "y.npy"), "images": len(items), "decode": decode}


def compare_on_data(bundle: Bundle, rows: list[dict[str, Any]], data: dict[str, Any],
                    settings: BenchSettings) -> tuple[str | None, str]:
    """Set each artifact's drop on --data beside the manifest's (runtime.provenance): (what the FP32
    reference was, e.g. "model.onnx on onnxruntime-cpu", "") or (None, why there is none)."""
    ref = fp32_reference(bundle, rows, data, settings)
    compare_with_manifest(bundle, rows, np.load(data["y"]), None if isinstance(ref, str) else ref)
    return (None, ref) if isinstance(ref, str) else (ref[0], "")


def fp32_reference(bundle: Bundle, rows: list[dict[str, Any]], data: dict[str, Any],
                   settings: BenchSettings) -> tuple[str, np.ndarray] | str:
    """(label, per-image FP32 predictions), or why there are none. The FP32 row measured here when
    there is one; else (``--artifact`` left it out) model.onnx is run once more on the CPU, in this
    process after every worker has finished, so no timed figure is coloured by it."""
    art = fp32_artifact(bundle)
    if art is None:
        return f"bundle {bundle.root} has no FP32 ONNX artifact"
    row = reference_row(rows, art.file)
    if row is not None:
        return row_label(row), np.asarray(row["predictions"])
    print(f"measuring {art.file} on onnxruntime-cpu for the top-1 drop on --data ...", flush=True)
    try:
        session = require_available(get_backend("onnxruntime-cpu")).open(art, SessionOptions(threads=settings.threads))
        preds = top1_accuracy(session, data, bundle.max_batch)["predictions"]
    except (UserError, RuntimeError, OSError) as exc:  # said in the report: it must not lose the measured rows
        return f"no FP32 reference: {art.file} did not run on onnxruntime-cpu ({exc})"
    return f"{art.file} on onnxruntime-cpu", np.asarray(preds)


# --------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> None:
    """CLI: arguments are parsed (strictly, from BenchSettings) before the bundle is opened."""
    parser = parser_for("python -m runtime.bench", __doc__.splitlines()[0], BenchSettings,
                        [Positional("bundles", "bundle folders written by python -m export (several: one frontier)",
                                    "+")])
    args = parser.parse_args(argv)

    def bench() -> Any:
        settings = settings_from(BenchSettings, args)  # its checks are UserErrors: one line, no traceback
        if len(args.bundles) == 1:
            return run_bench(args.bundles[0], settings)
        return run_bench_many([Path(b) for b in args.bundles], settings)
    run_cli(bench)


if __name__ == "__main__":
    main()
