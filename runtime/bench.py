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

Every backend returns its result on the host, so on a GPU each timed call ends synchronised.

Options: ``--backend a,b`` ``--artifact f1,f2`` ``--batch 1,8,32`` ``--data DIR`` ``--limit N``
``--seconds S`` (per measurement) ``--warmup N`` ``--threads N`` ``--out DIR`` ``--no-plots``
``--reference-checkpoint best.pt`` (adds a PyTorch eager row when torch is installed)
``--timeout S`` (per artifact and backend; a worker that outlives it becomes a failed row).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from runtime.backends import SessionOptions, get_backend, list_backends, require_available
from runtime.backends.base import Session, open_reference
from formats.bundle import Artifact, Bundle, load_bundle
from runtime.dataset import load_labelled_images
from runtime.device import PowerSampler, device_info, software_versions
from formats.cli import Positional, parser_for, settings_from
from formats.errors import UserError, run_cli
from formats.preprocessing import open_image, preprocess_image

SCHEMA = "vl2lite-bench"
# Backends tried when none is named; onnxruntime-tensorrt is left to an explicit --backend
# because it builds TensorRT engines for minutes on first use.
DEFAULT_BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda", "tensorrt")


@dataclass(frozen=True)
class BenchSettings:
    backends: tuple[str, ...] = field(default=(), metadata={"flag": "backend"})  # empty: every usable default
    artifacts: tuple[str, ...] = field(default=(), metadata={"flag": "artifact"})  # empty: every artifact
    batches: tuple[int, ...] = field(default=(1, 8, 32), metadata={"flag": "batch"})  # Offline batch sizes
    seconds: float = 1.5  # timed duration of each measurement (SingleStream, each Offline batch)
    min_iters: int = 3  # ...but at least this many runs, so slow batches still give a spread
    max_iters: int = 2000  # ...and at most this many
    warmup: int = 5  # untimed runs first
    threads: int = 0  # intra-op threads, 0 = backend default
    data: Path | None = None  # labelled images (CUB layout or class folders): adds top-1
    limit: int | None = None  # at most this many --data images
    out: Path | None = None  # default runs/bench/<bundle name>
    plots: bool = True  # write the two PNG plots (needs matplotlib)
    reference_checkpoint: Path | None = None  # best.pt: adds a PyTorch eager row (needs the training packages)
    timeout_s: float = field(default=1800.0, metadata={"flag": "timeout"})  # per artifact and backend, seconds

    def __post_init__(self) -> None:
        if not self.batches or min(self.batches) < 1:
            raise UserError(f"--batch needs positive batch sizes, got {self.batches}")
        if self.seconds <= 0 or self.warmup < 0 or self.min_iters < 1 or self.threads < 0:
            raise UserError("--seconds must be > 0, --warmup and --threads >= 0")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}")
        if self.timeout_s <= 0:
            raise UserError(f"--timeout must be > 0 seconds, got {self.timeout_s}")
        for name in self.backends:
            get_backend(name)  # an unknown name lists the valid ones


@dataclass(frozen=True)
class Job:
    artifact: str  # bundle file, or the checkpoint for the PyTorch reference
    backend: str
    precision: str
    target: str
    size_bytes: int


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
              "device": device_info(), "software": software_versions(), "settings": _settings_json(settings),
              "data": {"root": str(settings.data), "images": data["images"]} if data else None,
              "results": sorted(rows, key=lambda r: r["status"] != "ok")}
    write_json_atomic(out / "bench.json", report)
    report["plots"] = _plots(report["results"], out) if settings.plots else []
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


# --------------------------------------------------------------------------- measurement

def measure_in_worker(bundle: Bundle, job: Job, settings: BenchSettings, data: dict[str, Any] | None,
                      tmp: Path) -> dict[str, Any]:
    """Run ``_worker`` in a fresh interpreter for one job; a failure becomes a visible row."""
    request = {"bundle": str(bundle.root), "job": asdict(job), "settings": _settings_json(settings), "data": data}
    job_file, result_file = tmp / "job.json", tmp / "result.json"
    job_file.write_text(json.dumps(request))
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-c", "from runtime.bench import _worker; _worker()", str(job_file), str(result_file)]
    print(f"measuring {job.artifact} on {job.backend} ...", flush=True)
    row = {"artifact": Path(job.artifact).name, "backend": job.backend, "precision": job.precision,
           "target": job.target, "size_mb": round(job.size_bytes / 1e6, 2)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": _pythonpath()},
                              timeout=settings.timeout_s)
    except subprocess.TimeoutExpired:
        return {**row, "status": "failed", "note": f"worker timed out after {settings.timeout_s:g} s (raise --timeout)"}
    if proc.returncode != 0 or not result_file.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {**row, "status": "failed", "note": f"worker exited with {proc.returncode}: {last}"}
    result = json.loads(result_file.read_text())
    if "error" in result:
        return {**row, "status": "failed", "note": result["error"]}
    return {**row, "status": "ok", **result}


def _pythonpath() -> str:
    """The worker must import this same runtime package, also when it is not installed."""
    here = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join([here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


def _worker() -> None:
    job_file, result_file = Path(sys.argv[1]), Path(sys.argv[2])
    request = json.loads(job_file.read_text())
    try:
        result = measure_job(Path(request["bundle"]), Job(**request["job"]),
                             _settings_from_json(request["settings"]), request["data"])
    except UserError as exc:
        result = {"error": str(exc)}
    write_json_atomic(result_file, result)


def open_job_session(bundle: Bundle, job: Job, settings: BenchSettings) -> Session:
    if job.backend == "torch-eager":
        return open_reference(job.backend, Path(job.artifact))  # a plugin; the runtime never imports torch
    spec = require_available(get_backend(job.backend))
    return spec.open(bundle.artifact(job.artifact), SessionOptions(threads=settings.threads))


def measure_job(bundle_dir: Path, job: Job, settings: BenchSettings, data: dict[str, Any] | None) -> dict[str, Any]:
    """Load, time and score one (artifact, backend) in this process."""
    bundle = load_bundle(bundle_dir, verify=False)  # the parent verified the checksums
    baseline_rss = _peak_rss_mb()
    start = time.perf_counter()
    session = open_job_session(bundle, job, settings)
    load_s = time.perf_counter() - start
    with PowerSampler() as power:
        timing = measure_session(session, (3, *bundle.preprocessing.input_size), settings, bundle.max_batch)
    result = {"device": session.device, "load_s": round(load_s, 3), **timing,
              "baseline_rss_mb": baseline_rss, "peak_rss_mb": _peak_rss_mb(), "power_mw": power.mean_mw}
    if data:
        result.update(top1_accuracy(session, data, min(max(settings.batches), bundle.max_batch)))
    return result


def measure_session(session: Session, chw: tuple[int, int, int], settings: BenchSettings,
                    max_batch: int) -> dict[str, Any]:
    """Warm-up, SingleStream at batch 1, then Offline throughput per batch size."""
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((1, *chw), dtype=np.float32)
    for _ in range(settings.warmup):
        session.run(x1)
    single = latency_stats(timed_runs(lambda: session.run(x1), settings))
    offline = []
    for b in settings.batches:
        if b > max_batch:
            offline.append({"batch": b, "skipped": f"over the bundle's max_batch {max_batch}"})
            continue
        xb = rng.standard_normal((b, *chw), dtype=np.float32)
        for _ in range(min(settings.warmup, 2)):
            session.run(xb)  # a new shape: let the backend plan and allocate for it first
        times = timed_runs(lambda: session.run(xb), settings)
        offline.append({"batch": b, "images_per_s": round(b * len(times) / float(np.sum(times)), 2),
                        **latency_stats(times)})
    best = max((o for o in offline if "images_per_s" in o), key=lambda o: o["images_per_s"], default=None)
    return {"single_stream": single, "offline": offline,
            "best_fps": best["images_per_s"] if best else None, "best_batch": best["batch"] if best else None}


def timed_runs(call: Callable[[], Any], settings: BenchSettings) -> np.ndarray:
    """Seconds per call: run until ``settings.seconds`` have passed and at least ``min_iters`` runs."""
    times = []
    total = 0.0
    while (total < settings.seconds or len(times) < settings.min_iters) and len(times) < settings.max_iters:
        t0 = time.perf_counter()
        call()
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
    return np.asarray(times)


P99_MIN_ITERATIONS = 100  # fewer runs than this and the 99th percentile is about the slowest run


def latency_stats(seconds: np.ndarray) -> dict[str, Any]:
    ms = seconds * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": round(float(p50), 3), "p90_ms": round(float(p90), 3), "p99_ms": round(float(p99), 3),
            "mean_ms": round(float(ms.mean()), 3), "min_ms": round(float(ms.min()), 3), "iterations": int(len(ms)),
            "p99_reliable": len(ms) >= P99_MIN_ITERATIONS}


def top1_accuracy(session: Session, data: dict[str, Any], batch: int) -> dict[str, Any]:
    x = np.load(data["x"], mmap_mode="r")
    y = np.load(data["y"])
    correct = 0
    for i in range(0, len(y), batch):
        logits = session.run(np.ascontiguousarray(x[i:i + batch]))
        correct += int((logits.argmax(axis=1) == y[i:i + batch]).sum())
    return {"top1": round(correct / len(y), 4), "images": int(len(y))}


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


# --------------------------------------------------------------------------- output

def format_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'artifact':<22} {'backend':<18} {'size MB':>8} {'top-1':>6} {'p50 ms':>8} {'p90 ms':>8} " \
           f"{'p99 ms':>8} {'FPS (batch)':>14}"
    lines = [head, "-" * len(head)]
    for r in rows:
        start = f"{r['artifact'][:22]:<22} {(r['backend'] or '-'):<18} {r['size_mb']:>8.1f}"
        if r["status"] != "ok":
            lines.append(f"{start}  {r['note']}")
            continue
        top1 = f"{r['top1']:.3f}" if r.get("top1") is not None else "-"
        s = r["single_stream"]
        fps = f"{r['best_fps']:.1f} (@{r['best_batch']})" if r.get("best_fps") else "-"
        p99 = f"{s['p99_ms']:.2f}" + ("" if s.get("p99_reliable", True) else "*")
        lines.append(f"{start} {top1:>6} {s['p50_ms']:>8.2f} {s['p90_ms']:>8.2f} {p99:>8} {fps:>14}")
    if any(r["status"] == "ok" and not r["single_stream"].get("p99_reliable", True) for r in rows):
        lines.append(f"* p99 from fewer than {P99_MIN_ITERATIONS} runs: about the slowest run, not a "
                     f"percentile (raise --seconds)")
    return "\n".join(lines)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _plots(rows: list[dict[str, Any]], out: Path) -> list[str]:
    from runtime.plots import plot_accuracy_vs_latency, plot_latency_vs_batch
    try:
        written = [plot_latency_vs_batch(rows, out / "latency_vs_batch.png"),
                   plot_accuracy_vs_latency(rows, out / "accuracy_vs_latency.png")]
    except ImportError:
        print("note: matplotlib is not installed, no plots (pip install matplotlib)")
        return []
    return [str(p) for p in written if p is not None]


def _settings_json(settings: BenchSettings) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()}


def _settings_from_json(d: dict[str, Any]) -> BenchSettings:
    paths = {"data", "out", "reference_checkpoint"}
    fixed = {k: (Path(v) if k in paths and v is not None else tuple(v) if isinstance(v, list) else v)
             for k, v in d.items()}
    return BenchSettings(**fixed)


# --------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> None:
    """CLI: arguments are parsed (strictly, from BenchSettings) before the bundle is opened."""
    parser = parser_for("python -m runtime.bench", __doc__.splitlines()[0], BenchSettings,
                        [Positional("bundle", "the bundle folder written by python -m export")])
    args = parser.parse_args(argv)
    run_cli(lambda: run_bench(args.bundle, settings_from(BenchSettings, args)))


if __name__ == "__main__":
    main()
