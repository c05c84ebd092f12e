"""Serving benchmark: server throughput and latency under load against the in-process pipeline.

    python benchmarks/serve_load.py <bundle> [--concurrency 1,8,32] [--requests 256] [--max-batch 32] [--rounds 3]
                                    [--decodes exact,jpeg-draft] [--payload photo|synthetic]

The payload is one 500x375 JPEG (CUB-sized, quality 90): ``photo`` is a real photograph
(matplotlib's sample ``grace_hopper.jpg``, cropped to 4:3 and resized), ``synthetic`` a pattern
with pixel noise (costlier to decode than most photos). For each decoding (``--decodes``):

1. Decode + preprocess: median milliseconds per image (``Classifier.load``, what the server runs).
2. In-process references, the bundle's artifact on onnxruntime-cpu at batch 1, 8, 16, 32: the
   model alone (float32 input ready), and the full pipeline (decode + preprocess + model on the
   same JPEG, one thread decoding); the best batch of each is the reference.
3. Load: a real server (``--decode`` as given) on loopback with dynamic batching; for each
   concurrency, ``--requests`` uploads from a minimal asyncio HTTP/1.1 client; throughput, p50 and
   p99; levels interleaved over ``--rounds`` rounds, the median round reported.

Cold start: from ``Popen(python -m runtime.serve ...)`` to the first 200 answer of ``POST
/predict`` (median of 3 starts).

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

from formats.files import write_json  # noqa: E402
from formats.records import to_dict  # noqa: E402
from runtime.settings import BenchSettings  # noqa: E402
from runtime.device import device_info, software_versions  # noqa: E402
from runtime.bench.measure import measure_session  # noqa: E402
from runtime.model import Classifier, open_classifier  # noqa: E402


def photo_jpeg(width: int = 500, height: int = 375) -> bytes:
    """A real photograph as a ``width`` x ``height`` JPEG (quality 90)."""
    import matplotlib
    with Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg") as src:
        w, h = src.size  # 512 x 600: the largest centred crop of the target's aspect ratio
        cw, ch = (w, round(w * height / width)) if w * height <= h * width else (round(h * width / height), h)
        img = src.convert("RGB").crop(((w - cw) // 2, (h - ch) // 2, (w + cw) // 2, (h + ch) // 2))
    buf = io.BytesIO()
    img.resize((width, height), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def sample_jpeg(width: int = 500, height: int = 375) -> bytes:
    """A synthetic pattern with pixel noise as a JPEG (quality 90): costlier to decode than a photo."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([np.sin(xx / 17 + c) * np.cos(yy / 23) * 100 + 128 for c in range(3)], -1)
    img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


PAYLOADS = {"photo": photo_jpeg, "synthetic": sample_jpeg}


def in_process(clf: Classifier, seconds: float) -> dict[str, Any]:
    """The model alone: Offline throughput on a ready float32 batch."""
    batches = tuple(b for b in (1, 8, 16, 32) if b <= clf.bundle.max_batch)
    settings = BenchSettings(batches=batches, seconds=seconds, warmup=3)
    timing = measure_session(clf.session, (3, *clf.bundle.preprocessing.input_size), settings, clf.bundle.max_batch)
    return {"artifact": clf.artifact.file, **to_dict(timing)}


def decode_ms(clf: Classifier, payload: bytes, iterations: int = 500) -> float:
    """Median milliseconds of decode + preprocess of ``payload`` (after a warm-up)."""
    for _ in range(20):
        clf.load(payload)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        clf.load(payload)
        times.append(time.perf_counter() - t0)
    return round(1e3 * float(np.median(times)), 4)


def pipeline(clf: Classifier, payload: bytes, seconds: float) -> dict[str, Any]:
    """The full pipeline in-process: decode + preprocess ``b`` images, then run the model on them."""
    rows = []
    for b in (b for b in (1, 8, 16, 32) if b <= clf.bundle.max_batch):
        def step() -> None:
            clf.session.run(np.stack([clf.load(payload) for _ in range(b)]))  # (b, 3, H, W)
        for _ in range(3):
            step()
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or done < 3:
            step()
            done += 1
        rows.append({"batch": b, "images_per_s": round(b * done / (time.perf_counter() - t0), 2)})
    best = max(rows, key=lambda r: r["images_per_s"])
    return {"offline": rows, "best_fps": best["images_per_s"], "best_batch": best["batch"]}


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


def serve_rounds(bundle: Path, args: list[str], payload: bytes, levels: tuple[int, ...], requests: int,
                 rounds: int) -> list[dict[str, Any]]:
    """One server, every concurrency level over ``rounds`` interleaved rounds; the median round of each."""
    proc, url, _ = start(bundle, args, payload)
    try:
        runs: dict[int, list[dict[str, Any]]] = {c: [] for c in levels}
        for _ in range(rounds):  # levels interleaved, so drift in machine load hits all alike
            for c in levels:
                runs[c].append(asyncio.run(load(url, payload, requests, c)))
    finally:
        stop(proc)
    return [median_round(runs[c]) for c in levels]


def run(bundle: str, artifact: str | None = None, concurrency: tuple[int, ...] = (1, 8, 32), requests: int = 256,
        max_batch: int = 32, max_delay_ms: float = 5.0, seconds: float = 3.0, rounds: int = 3,
        decodes: tuple[str, ...] = ("exact", "jpeg-draft"), payload: str = "photo",
        out: str = "benchmarks/results/serve_load.json") -> dict[str, Any]:
    levels, decodes = tuple(concurrency), tuple(decodes)
    if payload not in PAYLOADS:
        raise SystemExit(f"--payload must be one of {', '.join(PAYLOADS)}")
    image = PAYLOADS[payload]()
    model = open_classifier(Path(bundle), "onnxruntime-cpu", artifact or "model.onnx")
    reference = in_process(model, seconds)
    chosen = ["--backend", "onnxruntime-cpu", *(["--artifact", artifact] if artifact else [])]  # as in-process
    colds = []
    for _ in range(3):
        proc, _, cold = start(Path(bundle), chosen, image)
        stop(proc)
        colds.append(round(cold, 3))
    args = [*chosen, "--max-batch", str(max_batch), "--max-delay-ms", str(max_delay_ms), "--max-queue", "1024"]
    results = []
    for mode in decodes:
        clf = open_classifier(Path(bundle), "onnxruntime-cpu", artifact or "model.onnx", decode=mode)
        full = pipeline(clf, image, seconds)
        rows = serve_rounds(Path(bundle), [*args, "--decode", mode], image, levels, requests, rounds)
        for row in rows:
            row["ratio_to_pipeline"] = round(row["images_per_s"] / full["best_fps"], 3)
            row["ratio_to_model"] = round(row["images_per_s"] / reference["best_fps"], 3)
        results.append({"decode": mode, "decode_preprocess_ms": decode_ms(clf, image), "pipeline": full, "load": rows})
    draft = model.bundle.preprocessing.jpeg_draft
    report = {"machine": to_dict(device_info()), "software": to_dict(software_versions()), "bundle": str(bundle),
              "input_size": list(model.bundle.preprocessing.input_size), "payload": payload, "payload_bytes": len(image),
              "jpeg_draft_parity": None if draft is None else draft.to_dict(),
              "server": {"max_batch": max_batch, "max_delay_ms": max_delay_ms}, "rounds": rounds,
              "in_process": reference, "cold_start_s": {"runs": colds, "median": float(np.median(colds))},
              "decodes": results}
    write_json(REPO / out if not os.path.isabs(out) else Path(out), report)
    print(table(report))
    return report


def table(report: dict[str, Any]) -> str:
    m, ref = report["machine"], report["in_process"]
    size = "x".join(map(str, report["input_size"]))
    lines = [f"machine: {m['cpu']}, {m['cpu_cores']} cores; artifact {ref['artifact']} ({size}) on onnxruntime-cpu; "
             f"payload {report['payload']} ({report['payload_bytes']} bytes)",
             f"model alone, in-process best: {ref['best_fps']:.1f} images/s at batch {ref['best_batch']}",
             f"cold start (process start to first answer): median {report['cold_start_s']['median']:.2f} s "
             f"{report['cold_start_s']['runs']}",
             f"JPEG draft parity recorded by export: {report['jpeg_draft_parity']}",
             f"load: median of {report['rounds']} rounds per level (all rounds' images/s in brackets)"]
    for d in report["decodes"]:
        full = d["pipeline"]
        lines += [f"decode {d['decode']}: decode + preprocess {d['decode_preprocess_ms']:.3f} ms per image; full pipeline "
                  f"in-process best {full['best_fps']:.1f} images/s at batch {full['best_batch']}",
                  f"{'concurrency':>11} {'images/s':>9} {'x pipeline':>11} {'x model':>8} {'p50 ms':>8} {'p99 ms':>8}  "
                  f"status codes  rounds"]
        for r in d["load"]:
            lines.append(f"{r['concurrency']:>11} {r['images_per_s']:>9.1f} {r['ratio_to_pipeline']:>11.2f} "
                         f"{r['ratio_to_model']:>8.2f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}  {r['status_codes']}  "
                         f"{r['images_per_s_rounds']}")
    return "\n".join(lines)


if __name__ == "__main__":
    from formats.cli import call_from_argv
    call_from_argv(run, prog="python benchmarks/serve_load.py")
