"""One benchmark job in a fresh worker process: the parent's launcher and the worker's entry point.

Each (artifact, backend) is measured in its own interpreter, so one model's memory, threads and
allocator state cannot colour the next one's figures, and "peak memory" is that process's own
peak resident set. Job and result travel as JSON files; a crash, an error or a timeout comes back
as a failed row.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from formats.bundle import Bundle
from formats.errors import UserError
from formats.files import write_json
from runtime.bench_settings import BenchSettings, Job, settings_from_json, settings_json
from runtime.measure import measure_job


def measure_in_worker(bundle: Bundle, job: Job, settings: BenchSettings, data: dict[str, Any] | None,
                      tmp: Path) -> dict[str, Any]:
    """Run ``_worker`` in a fresh interpreter for one job; a failure becomes a visible row."""
    request = {"bundle": str(bundle.root), "job": asdict(job), "settings": settings_json(settings), "data": data}
    job_file, result_file = tmp / "job.json", tmp / "result.json"
    job_file.write_text(json.dumps(request))
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-c", "from runtime.bench_worker import _worker; _worker()", str(job_file),
           str(result_file)]
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
                             settings_from_json(request["settings"]), request["data"])
    except UserError as exc:
        result = {"error": str(exc)}
    write_json(result_file, result)
