"""Measuring one (artifact, backend) in this process: open the session, warm up, time
SingleStream and Offline runs, latency percentiles, peak memory, power, and the top-1 pass.

Every backend returns its result on the host, so on a GPU each timed call ends synchronised.
"""
from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from formats.bench import Latency, OfflinePoint
from formats.bundle import Bundle, load_bundle
from runtime.backends import SessionOptions, get_backend, require_available
from runtime.backends.base import Session, open_reference
from runtime.bench.jobs import Job, Measurement, PreparedData, Scored, Timing
from runtime.device import PowerSampler
from runtime.settings import BenchSettings

P99_MIN_ITERATIONS = 100  # fewer runs than this and the 99th percentile is about the slowest run
Say = Callable[[str], None]  # what is running now, for the progress of the job (runtime.bench.worker)


def _quiet(text: str) -> None:
    pass


def steps(settings: BenchSettings, scored: bool) -> int:
    """How many times ``measure_job`` says what runs: load, warm-up, SingleStream, each Offline batch, --data."""
    return 3 + len(settings.batches) + int(scored)


def open_job_session(bundle: Bundle, job: Job, settings: BenchSettings) -> Session:
    if job.backend == "torch-eager":
        return open_reference(job.backend, Path(job.artifact))  # a plugin; the runtime never imports torch
    spec = require_available(get_backend(job.backend))
    return spec.open(bundle.artifact(job.artifact), SessionOptions(threads=settings.threads))


def measure_job(bundle_dir: Path, job: Job, settings: BenchSettings, data: PreparedData | None,
                say: Say = _quiet) -> Measurement:
    """Load, time and score one (artifact, backend) in this process, saying each step (``steps``) as it starts."""
    bundle = load_bundle(bundle_dir, verify=False)  # the parent verified the checksums
    baseline_rss = _peak_rss_mb()
    say("loading the model")
    start = time.perf_counter()
    session = open_job_session(bundle, job, settings)
    load_s = time.perf_counter() - start
    with PowerSampler() as power:
        timing = measure_session(session, (3, *bundle.preprocessing.input_size), settings, bundle.max_batch, say)
    peak_rss = _peak_rss_mb()  # read before the accuracy pass: the timed runs' peak
    if data:
        say(f"accuracy on --data ({data.images} images)")
    scored = top1_accuracy(session, data, min(max(settings.batches), bundle.max_batch), say) if data else None
    return Measurement(device=session.device, load_s=round(load_s, 3), timing=timing, baseline_rss_mb=baseline_rss,
                       peak_rss_mb=peak_rss, power_mw=power.mean_mw, scored=scored)


def measure_session(session: Session, chw: tuple[int, int, int], settings: BenchSettings,
                    max_batch: int, say: Say = _quiet) -> Timing:
    """Warm-up, SingleStream at batch 1, then Offline throughput per batch size. Batch 1 is measured
    once: its Offline point is the SingleStream runs, so the table and the plot show one figure."""
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((1, *chw), dtype=np.float32)
    say(f"warm-up ({settings.warmup} runs)")
    for _ in range(settings.warmup):
        session.run(x1)
    say(f"SingleStream, batch 1 (at least {settings.seconds:g} s)")
    single_times = timed_runs(lambda: session.run(x1), settings)
    single = latency_stats(single_times)
    offline = []
    for b in settings.batches:
        if b > max_batch:
            say(f"Offline batch {b}: skipped, over the bundle's max_batch {max_batch}")
            offline.append(OfflinePoint(b, None, None, f"over the bundle's max_batch {max_batch}"))
            continue
        say(f"Offline batch {b}" + (": the SingleStream runs" if b == 1 else f" (at least {settings.seconds:g} s)"))
        times = single_times if b == 1 else _offline_times(session, rng, (b, *chw), settings)
        offline.append(OfflinePoint(b, round(b * len(times) / float(np.sum(times)), 2),
                                    single if b == 1 else latency_stats(times), None))
    best = max((o for o in offline if o.images_per_s is not None), key=lambda o: o.images_per_s, default=None)
    return Timing(single, tuple(offline), best.images_per_s if best else None, best.batch if best else None)


def _offline_times(session: Session, rng: np.random.Generator, shape: tuple[int, ...],
                   settings: BenchSettings) -> np.ndarray:
    xb = rng.standard_normal(shape, dtype=np.float32)  # (B, 3, H, W)
    for _ in range(min(settings.warmup, 2)):
        session.run(xb)  # a new shape: let the backend plan and allocate for it first
    return timed_runs(lambda: session.run(xb), settings)


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


def latency_stats(seconds: np.ndarray) -> Latency:
    ms = seconds * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return Latency(p50_ms=round(float(p50), 3), p90_ms=round(float(p90), 3), p99_ms=round(float(p99), 3),
                   mean_ms=round(float(ms.mean()), 3), min_ms=round(float(ms.min()), 3), iterations=int(len(ms)),
                   p99_reliable=len(ms) >= P99_MIN_ITERATIONS)


def top1_accuracy(session: Session, data: PreparedData, batch: int, say: Say = _quiet,
                  every_s: float = 20.0) -> Scored:
    """Top-1 on the prepared --data images, and each image's predicted class; ``say`` hears how far
    it is at most every ``every_s`` seconds (a long pass is never silent)."""
    x = np.load(data.x, mmap_mode="r")  # (N, 3, H, W) float32, written by runtime.bench.evaluation
    y = np.load(data.y)  # (N,) int64
    parts, last = [], time.perf_counter()
    for i in range(0, len(y), batch):
        parts.append(session.run(np.ascontiguousarray(x[i:i + batch])).argmax(axis=1))  # (b,)
        if time.perf_counter() - last >= every_s and i + batch < len(y):
            say(f"... accuracy on --data: {i + batch}/{len(y)} images")
            last = time.perf_counter()
    preds = np.concatenate(parts)  # (N,)
    return Scored(top1=round(float((preds == y).mean()), 4), images=int(len(y)), predictions=tuple(preds.tolist()))


def _peak_rss_mb() -> float:
    """This process's peak resident set, MB. On Linux VmHWM: ru_maxrss survives execve, so a worker
    started by a parent holding 1.3 GB (torch, in a test or a sweep) would report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError, IndexError):
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; no /proc elsewhere
    return round(kib / 1024, 1)
