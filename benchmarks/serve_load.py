"""Serving benchmark: server throughput and latency under load against the in-process session.

    python benchmarks/serve_load.py <bundle> [--concurrency 1,8,32] [--requests 256] [--max-batch 32] [--rounds 3]

1. In-process: the bundle's artifact on onnxruntime-cpu, Offline throughput at batch 1, 8, 16, 32
   (model only, no decoding); the best batch size is the reference.
2. Cold start: from ``Popen(python -m runtime.serve ...)`` to the first 200 answer of ``POST
   /predict`` (median of 3 starts).
3. Load: a real server on loopback with dynamic batching; for each concurrency, ``--requests``
   JPEG uploads (500x375, CUB-sized) from a minimal asyncio HTTP/1.1 client; throughput, p50 and p99; levels
   interleaved over ``--rounds`` rounds, the median round reported.

The client runs on the same machine as the server and takes CPU from it; the figures are for the
whole loop on this machine. Writes benchmarks/results/serve_load.json and prints a table.
"""
from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime.bench import BenchSettings  # noqa: E402
from runtime.measure import measure_session  # noqa: E402
from formats.files import write_json  # noqa: E402
from runtime.device import device_info, software_versions  # noqa: E402
from runtime.model import open_classifier  # noqa: E402


def sample_jpeg(width: int = 500, height: int = 375) -> bytes:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([np.sin(xx / 17 + c) * np.cos(yy / 23) * 100 + 128 for c in range(3)], -1)
    img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def in_process(bundle: Path, artifact: str | None, seconds: float) -> dict[str, Any]:
    clf = open_classifier(bundle, "onnxruntime-cpu", artifact)
    batches = tuple(b for b in (1, 8, 16, 32) if b <= clf.bundle.max_batch)
    settings = BenchSettings(batches=batches, seconds=seconds, warmup=3)
    timing = measure_session(clf.session, (3, *clf.bundle.preprocessing.input_size), settings, clf.bundle.max_batch)
    return {"artifact": clf.artifact.file, **timing}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(bundle: Path, args: list[str], payload: bytes) -> tuple[subprocess.Popen, str, float]:
    """Start a server; return it, its URL and the seconds to its first answered /predict."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "runtime.serve", str(bundle), "--port", str(port), *args],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.post(f"{url}/predict", content=payload, timeout=5).status_code == 200:
                return proc, url, time.perf_counter() - t0
        except httpx.TransportError:
            time.sleep(0.005)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


async def load(url: str, payload: bytes, total: int, concurrency: int) -> dict[str, Any]:
    """``total`` POST /predict over ``concurrency`` keep-alive connections.

    The client is a few lines of asyncio streams with the request bytes built once (as wrk does):
    on a 2-core machine it shares the CPU with the server, so it must cost as little as possible.
    """
    latencies: list[float] = []
    codes: dict[int, int] = {}
    remaining = [total]
    host, port = url.removeprefix("http://").split(":")
    request = (f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
               f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while remaining[0] > 0:
                remaining[0] -= 1
                t0 = time.perf_counter()
                writer.write(request)
                status, body = await read_response(reader)
                latencies.append(time.perf_counter() - t0)
                codes[status] = codes.get(status, 0) + 1
                if status == 200 and b'"predictions"' not in body:
                    raise RuntimeError(f"answer without predictions: {body[:200]!r}")
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    ms = np.asarray(latencies) * 1e3
    return {"concurrency": concurrency, "requests": total, "status_codes": codes, "images_per_s": round(total / wall, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status code, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(ln.split(":", 1)[1]) for ln in lines if ln.lower().startswith("content-length:"))
    return int(lines[0].split()[1]), await reader.readexactly(length)


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput (its latencies with it), plus every round's throughput."""
    ordered = sorted(rounds, key=lambda r: r["images_per_s"])
    return {**ordered[(len(ordered) - 1) // 2], "images_per_s_rounds": [r["images_per_s"] for r in rounds]}


def run(bundle: str, artifact: str | None = None, concurrency: tuple[int, ...] = (1, 8, 32), requests: int = 256,
        max_batch: int = 32, max_delay_ms: float = 5.0, seconds: float = 3.0, rounds: int = 3,
        out: str = "benchmarks/results/serve_load.json") -> dict[str, Any]:
    levels = tuple(concurrency)
    payload = sample_jpeg()
    reference = in_process(Path(bundle), artifact, seconds)
    colds = []
    for _ in range(3):
        proc, _, cold = start(Path(bundle), [], payload)
        stop(proc)
        colds.append(round(cold, 3))
    args = ["--max-batch", str(max_batch), "--max-delay-ms", str(max_delay_ms), "--max-queue", "1024"]
    if artifact:
        args += ["--artifact", artifact]
    proc, url, _ = start(Path(bundle), args, payload)
    try:
        runs: dict[int, list[dict[str, Any]]] = {c: [] for c in levels}
        for _ in range(rounds):  # levels interleaved, so drift in machine load hits all alike
            for c in levels:
                runs[c].append(asyncio.run(load(url, payload, requests, c)))
    finally:
        stop(proc)
    rows = [median_round(runs[c]) for c in levels]
    for row in rows:
        row["ratio_to_in_process"] = round(row["images_per_s"] / reference["best_fps"], 3)
    report = {"machine": device_info(), "software": software_versions(), "bundle": str(bundle),
              "server": {"max_batch": max_batch, "max_delay_ms": max_delay_ms}, "rounds": rounds,
              "in_process": reference, "cold_start_s": {"runs": colds, "median": float(np.median(colds))},
              "load": rows}
    write_json(REPO / out if not os.path.isabs(out) else Path(out), report)
    print(table(report))
    return report


def table(report: dict[str, Any]) -> str:
    m, ref = report["machine"], report["in_process"]
    lines = [f"machine: {m['cpu']}, {m['cpu_cores']} cores; artifact {ref['artifact']} on onnxruntime-cpu",
             f"in-process best: {ref['best_fps']:.1f} images/s at batch {ref['best_batch']}",
             f"cold start (process start to first answer): median {report['cold_start_s']['median']:.2f} s "
             f"{report['cold_start_s']['runs']}",
             f"load: median of {report['rounds']} rounds per level (all rounds' images/s in brackets)",
             f"{'concurrency':>11} {'images/s':>9} {'x in-process':>13} {'p50 ms':>8} {'p99 ms':>8}  status codes  rounds"]
    for r in report["load"]:
        lines.append(f"{r['concurrency']:>11} {r['images_per_s']:>9.1f} {r['ratio_to_in_process']:>13.2f} "
                     f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}  {r['status_codes']}  {r['images_per_s_rounds']}")
    return "\n".join(lines)


if __name__ == "__main__":
    from formats.cli import call_from_argv
    call_from_argv(run, prog="python benchmarks/serve_load.py")
