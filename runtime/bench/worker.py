"""One benchmark job in a fresh worker process: the parent's launcher and the worker's entry point.

Each (artifact, backend) is measured in its own interpreter, so one model's memory, threads and
allocator state cannot colour the next one's figures, and "peak memory" is that process's own
peak resident set. Job and result travel as JSON files (runtime.bench.jobs); a crash, an error or
a timeout comes back as a failed row.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from formats.bench import BenchRow
from formats.bundle import Bundle
from formats.errors import UserError
from formats.files import write_json
from formats.records import from_dict, to_dict
from runtime.bench.jobs import Job, Measurement, PreparedData, WorkerRequest, WorkerResult
from runtime.bench.measure import measure_job
from runtime.settings import BenchSettings

BUG = "a bug in runtime.bench: report it"  # both files are written by this package


def measure_in_worker(bundle: Bundle, job: Job, settings: BenchSettings, data: PreparedData | None,
                      tmp: Path) -> tuple[BenchRow, tuple[int, ...] | None]:
    """Run ``worker_main`` in a fresh interpreter for one job: (its row, each --data image's predicted
    class or None). A failure becomes a visible row."""
    request = WorkerRequest(str(bundle.root), job, settings.record(), data)
    job_file, result_file = tmp / "job.json", tmp / "result.json"
    write_json(job_file, to_dict(request))
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-c", "from runtime.bench.worker import worker_main; worker_main()", str(job_file),
           str(result_file)]
    print(f"measuring {job.artifact} on {job.backend} ...", flush=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": _pythonpath()},
                              timeout=settings.timeout_s)
    except subprocess.TimeoutExpired:
        return failed_row(job, f"worker timed out after {settings.timeout_s:g} s (raise --timeout)"), None
    if proc.returncode != 0 or not result_file.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return failed_row(job, f"worker exited with {proc.returncode}: {last}"), None
    result = from_dict(WorkerResult, json.loads(result_file.read_text()), str(result_file), BUG)
    if result.measurement is None:
        return failed_row(job, result.error or "the worker measured nothing"), None
    scored = result.measurement.scored
    return measured_row(job, result.measurement), scored.predictions if scored else None


def failed_row(job: Job, note: str) -> BenchRow:
    return BenchRow(artifact=Path(job.artifact).name, backend=job.backend, precision=job.precision,
                    target=job.target, size_mb=round(job.size_bytes / 1e6, 2), status="failed", note=note)


def measured_row(job: Job, m: Measurement) -> BenchRow:
    t = m.timing
    return BenchRow(artifact=Path(job.artifact).name, backend=job.backend, precision=job.precision,
                    target=job.target, size_mb=round(job.size_bytes / 1e6, 2), status="ok", note=None,
                    device=m.device, load_s=m.load_s, single_stream=t.single_stream, offline=t.offline,
                    best_fps=t.best_fps, best_batch=t.best_batch, baseline_rss_mb=m.baseline_rss_mb,
                    peak_rss_mb=m.peak_rss_mb, power_mw=m.power_mw, top1=m.scored.top1 if m.scored else None,
                    images=m.scored.images if m.scored else None)


def _pythonpath() -> str:
    """The worker must import this same runtime package, also when it is not installed."""
    here = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join([here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


def worker_main() -> None:
    """The worker process: ``argv[1]`` the request file, ``argv[2]`` where the result goes."""
    job_file, result_file = Path(sys.argv[1]), Path(sys.argv[2])
    request = from_dict(WorkerRequest, json.loads(job_file.read_text()), str(job_file), BUG)
    try:
        result = WorkerResult(measure_job(Path(request.bundle), request.job,
                                          BenchSettings.from_record(request.settings), request.data), None)
    except UserError as exc:
        result = WorkerResult(None, str(exc))
    write_json(result_file, to_dict(result))
