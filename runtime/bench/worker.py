"""One benchmark job in a fresh worker process: the parent's launcher and the worker's entry point.

Each (artifact, backend) is measured in its own interpreter, so one model's memory, threads and
allocator state cannot colour the next one's figures, and "peak memory" is that process's own
peak resident set. Job and result travel as JSON files (runtime.bench.jobs); a crash, an error or
a timeout comes back as a failed row.
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from formats.bench import BenchRow
from formats.bundle import Bundle
from formats.errors import UserError
from formats.files import write_json
from formats.progress import Step, duration, stage
from formats.records import from_dict, to_dict
from runtime.backends.base import VERBOSE_ENV
from runtime.bench.jobs import Job, Measurement, PreparedData, WorkerRequest, WorkerResult
from runtime.bench.measure import measure_job, steps
from runtime.settings import BenchSettings

BUG = "a bug in runtime.bench: report it"  # both files are written by this package
PROGRESS = "@vl2lite-progress "  # a worker's stdout line that says what runs now ("... x": a note within the step)


def measure_in_worker(bundle: Bundle, job: Job, settings: BenchSettings, data: PreparedData | None,
                      tmp: Path) -> tuple[BenchRow, tuple[int, ...] | None]:
    """Run ``worker_main`` in a fresh interpreter for one job: (its row, each --data image's predicted
    class or None). A failure becomes a visible row. Its progress is one stage, a step per thing it runs."""
    request = WorkerRequest(str(bundle.root), job, settings.record(), data)
    job_file, result_file = tmp / "job.json", tmp / "result.json"
    write_json(job_file, to_dict(request))
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-c", "from runtime.bench.worker import worker_main; worker_main()", str(job_file),
           str(result_file)]
    env = {**os.environ, "PYTHONPATH": _pythonpath(), **({VERBOSE_ENV: "1"} if settings.verbose else {})}
    with stage(f"bench {job.artifact} on {job.backend}", steps(settings, data is not None), "step") as step:
        returncode, stderr = _run_reporting(cmd, env, settings.timeout_s, step, settings.verbose)
    if returncode is None:
        return failed_row(job, f"worker timed out after {settings.timeout_s:g} s (raise --timeout)"), None
    if returncode != 0 or not result_file.is_file():
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        return failed_row(job, f"worker exited with {returncode}: {last}"), None
    result = from_dict(WorkerResult, json.loads(result_file.read_text()), str(result_file), BUG)
    if result.measurement is None:
        return failed_row(job, result.error or "the worker measured nothing"), None
    scored = result.measurement.scored
    return measured_row(job, result.measurement), scored.predictions if scored else None


def _run_reporting(cmd: list[str], env: dict[str, str], timeout_s: float, step: Step, echo: bool = False,
                   quiet_s: float = 30.0) -> tuple[int | None, str]:
    """Run the worker, turning its ``PROGRESS`` lines into the stage's steps and notes as they come,
    and a "still running" note after ``quiet_s`` without one (an engine build, a slow batch): (exit
    status or None after a timeout, its stderr). ``echo`` (--verbose): its stderr is shown too."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str | None] = queue.Queue()  # the worker's progress, None at its end
    stderr: list[str] = []
    readers = [threading.Thread(target=_read_progress, args=(proc, lines), daemon=True),
               threading.Thread(target=_read_stderr, args=(proc, stderr, echo), daemon=True)]
    for reader in readers:
        reader.start()
    deadline, current, started = time.monotonic() + timeout_s, "starting", False
    try:
        while time.monotonic() < deadline:
            try:
                text = lines.get(timeout=min(quiet_s, max(deadline - time.monotonic(), 0.01)))
            except queue.Empty:
                step.note(f"{current}: still running, {duration(time.monotonic() + timeout_s - deadline)} in")
                continue
            if text is None:
                break
            if not text.startswith("... "):  # a new step: the one before it is done
                step.advance(int(started))
                started, current = True, text
            step.note(text)
    finally:
        if proc.poll() is None:  # timed out, or interrupted here: leave no worker behind
            proc.kill()
        proc.wait()
        for reader in readers:
            reader.join(timeout=5)
    if proc.returncode != 0 and time.monotonic() >= deadline:
        return None, "".join(stderr)
    step.advance(int(started))
    return proc.returncode, "".join(stderr)


def _read_progress(proc: subprocess.Popen, lines: "queue.Queue[str | None]") -> None:
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith(PROGRESS):  # anything else a library prints is not ours to show
            lines.put(line[len(PROGRESS):].rstrip("\n"))
    lines.put(None)


def _read_stderr(proc: subprocess.Popen, stderr: list[str], echo: bool) -> None:
    for line in proc.stderr:  # type: ignore[union-attr]
        stderr.append(line)
        if echo:
            print(line, end="", file=sys.stderr, flush=True)


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


def _say(text: str) -> None:
    """The worker's progress, one line on stdout that the parent reads (``_run_reporting``)."""
    print(f"{PROGRESS}{text}", flush=True)


def worker_main() -> None:
    """The worker process: ``argv[1]`` the request file, ``argv[2]`` where the result goes."""
    job_file, result_file = Path(sys.argv[1]), Path(sys.argv[2])
    request = from_dict(WorkerRequest, json.loads(job_file.read_text()), str(job_file), BUG)
    try:
        result = WorkerResult(measure_job(Path(request.bundle), request.job,
                                          BenchSettings.from_record(request.settings), request.data, _say), None)
    except UserError as exc:
        result = WorkerResult(None, str(exc))
    write_json(result_file, to_dict(result))
