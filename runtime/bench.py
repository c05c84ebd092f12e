"""Benchmark a bundle on this device, MLPerf-style: ``python -m runtime.bench <bundle> [options]``.

For every artifact and every backend that can run it here (or those named with ``--backend``):
warm-up, then SingleStream latency at batch 1 (p50/p90/p99 in ms; MLPerf reports p90), Offline
throughput per batch size (images/s), model size, peak memory, top-1 on ``--data`` when given,
and on a Jetson the module input power from tegrastats. Prints one table, writes ``bench.json``
(with the device and software versions) and two PNG plots.

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
"""
from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from formats.bundle import Artifact, Bundle, load_bundle
from formats.cli import Positional, parser_for, settings_from
from formats.errors import UserError, run_cli
from formats.files import write_json
from formats.preprocessing import open_image, preprocess_image
from runtime.backends import get_backend, list_backends, require_available
from runtime.bench_settings import BenchSettings, Job, settings_json
from runtime.bench_worker import measure_in_worker
from runtime.dataset import load_labelled_images
from runtime.device import device_info, software_versions
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
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        data = prepare_data(bundle, settings, Path(tmp)) if settings.data else None
        rows += [measure_in_worker(bundle, job, settings, data, Path(tmp)) for job in jobs]
    report = {"schema": SCHEMA, "schema_version": 1,
              "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "bundle": {"path": str(bundle.root), "name": bundle.name, "arch": bundle.arch,
                         "input": bundle.manifest["input"]},
              "device": device_info(), "software": software_versions(), "settings": settings_json(settings),
              "data": {"root": str(settings.data), "images": data["images"]} if data else None,
              "results": sorted(rows, key=lambda r: r["status"] != "ok")}
    write_json(out / "bench.json", report)
    report["plots"] = write_plots(report["results"], out) if settings.plots else []
    print(format_table(report["results"]))
    print(f"\nwrote {out / 'bench.json'}" + "".join(f", {p}" for p in report["plots"] if p.endswith(".png")))
    return report


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
    x = np.lib.format.open_memmap(tmp / "x.npy", mode="w+", dtype=np.float32, shape=(len(items), 3, h, w))
    for i, (path, _) in enumerate(items):
        x[i] = preprocess_image(open_image(path), bundle.preprocessing)
    x.flush()
    np.save(tmp / "y.npy", np.array([y for _, y in items], dtype=np.int64))
    return {"x": str(tmp / "x.npy"), "y": str(tmp / "y.npy"), "images": len(items)}


# --------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> None:
    """CLI: arguments are parsed (strictly, from BenchSettings) before the bundle is opened."""
    parser = parser_for("python -m runtime.bench", __doc__.splitlines()[0], BenchSettings,
                        [Positional("bundle", "the bundle folder written by python -m export")])
    args = parser.parse_args(argv)
    run_cli(lambda: run_bench(args.bundle, settings_from(BenchSettings, args)))


if __name__ == "__main__":
    main()
