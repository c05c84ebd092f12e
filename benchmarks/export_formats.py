"""PyTorch eager vs onnxruntime FP32 vs onnxruntime INT8 (U8S8) on this CPU, side by side in one run.

    python benchmarks/export_formats.py [--checkpoint runs/x/best.pt] [--size 224] [--epochs 4]

Without --checkpoint it generates synthetic birds and trains a resnet18 student first (offline).
Latency: warm-up, then the median (and p90) of N timed runs at batch 1 and batch 32, threads
pinned to the machine's cores. Top-1 on the test split. Writes benchmarks/results/export_formats.json
atomically and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from students.checkpoint import load_student  # noqa: E402
from export import ExportOptions, export_bundle  # noqa: E402
from export.api import tool_versions  # noqa: E402
from export.evaluation import ort_session  # noqa: E402

BATCHES = (1, 32)


def train_student(work: Path, size: int, epochs: int) -> Path:
    from distill.config import load_config
    from distill.synthetic import generate
    from distill.train import fit
    root = generate(work / "birds", num_classes=10, train_per_class=20, test_per_class=10, size_range=(240, 320))
    overrides = {"data.root": str(root), "data.input_size": size, "data.resize_size": int(size * 256 / 224),
                 "data.num_workers": 0, "train.out_dir": str(work / "runs"), "train.epochs": epochs,
                 "train.progress": False, "data.batch_size": 16}
    return fit(load_config(REPO / "configs" / "demo.yaml", overrides))


def time_runs(fn, warmup: int, runs: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "runs": runs}


def latencies(student: torch.nn.Module, bundle: Path, size: int, threads: int) -> dict[str, dict]:
    torch.set_num_threads(threads)
    sessions = {"onnxruntime-fp32": ort_session(bundle / "model.onnx", threads),
                "onnxruntime-int8": ort_session(bundle / "model.int8.onnx", threads)}
    out: dict[str, dict] = {"pytorch-eager": {}, **{k: {} for k in sessions}}
    for batch in BATCHES:
        x = np.random.default_rng(batch).normal(size=(batch, 3, size, size)).astype(np.float32)
        warmup, runs = (10, 50) if batch == 1 else (2, 10)
        xt = torch.from_numpy(x)
        with torch.inference_mode():
            out["pytorch-eager"][batch] = time_runs(lambda: student(xt), warmup, runs)
        for name, sess in sessions.items():
            out[name][batch] = time_runs(lambda s=sess: s.run(None, {"input": x}), warmup, runs)
    return out


def machine() -> dict[str, object]:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": model, "cores": os.cpu_count(), "avx512_vnni": "avx512_vnni" in flags,
            "platform": platform.platform(), "versions": tool_versions()}


def table(result: dict) -> str:
    lat, acc = result["latency"], result["top1"]
    fp32 = lat["onnxruntime-fp32"]
    lines = ["| format | top-1 | batch 1 median (ms) | vs ORT FP32 | batch 32 median (ms) | vs ORT FP32 |",
             "|---|---|---|---|---|---|"]
    for name in ("pytorch-eager", "onnxruntime-fp32", "onnxruntime-int8"):
        b1, b32 = lat[name]["1"], lat[name]["32"]
        lines.append(f"| {name} | {100 * acc[name]:.2f}% | {b1['median_ms']:.2f} | "
                     f"{b1['median_ms'] / fp32['1']['median_ms']:.2f}x | {b32['median_ms']:.1f} | "
                     f"{b32['median_ms'] / fp32['32']['median_ms']:.2f}x |")
    return "\n".join(lines)


def write_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--size", type=int, default=224, help="input size when training a student here")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "export_formats.json")
    args = ap.parse_args()
    threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        ckpt = args.checkpoint or train_student(work, args.size, args.epochs)
        train_s = time.perf_counter() - started
        student, meta = load_student(ckpt)
        size = meta.input_size[0]
        bundle = export_bundle(ckpt, work / "bundle", ExportOptions(backends=("int8",), calib_images=300))
        manifest = json.loads((bundle / "manifest.json").read_text())
        arts = {a["file"]: a for a in manifest["artifacts"]}
        lat = latencies(student, bundle, size, threads)
    result = {
        "machine": machine(), "threads": threads, "arch": meta.arch, "input_size": size,
        "trained_here": args.checkpoint is None, "train_epochs": None if args.checkpoint else args.epochs,
        "train_seconds": round(train_s, 1),
        "eval": manifest["reference"],
        "top1": {"pytorch-eager": manifest["reference"]["top1"], "onnxruntime-fp32": arts["model.onnx"]["top1"],
                 "onnxruntime-int8": arts["model.int8.onnx"]["top1"]},
        "int8_recipe": {k: arts["model.int8.onnx"]["quantization"][k]
                        for k in ("method", "calibration_images", "excluded_nodes", "remedies_needed")},
        "latency": {name: {str(b): v for b, v in per.items()} for name, per in lat.items()},
    }
    result["int8_vs_fp32_batch1"] = round(
        result["latency"]["onnxruntime-int8"]["1"]["median_ms"] / result["latency"]["onnxruntime-fp32"]["1"]["median_ms"], 3)
    write_atomic(args.out, result)
    print(f"{result['machine']['cpu']}, {threads} threads, {meta.arch} at {size}x{size}, "
          f"top-1 on {manifest['reference']['images']} {manifest['reference']['split']} images")
    print(table(result))
    print(f"INT8/FP32 latency at batch 1: {result['int8_vs_fp32_batch1']:.2f}x (target <= 0.5x); "
          f"top-1 drop {arts['model.int8.onnx']['top1_drop']:+.2f} points (target <= 1.0)")


if __name__ == "__main__":
    main()
