"""7-bit against 8-bit CPU INT8 weights: accuracy on real images, latency side by side, and what an AVX2 CPU computes.

The CPU INT8 graph (U8S8) has 7-bit weights so that no x86 CPU's int16 pair sums can saturate
(``export.int8.safety``). This measures what that costs and what it buys, on real Fashion-MNIST
images (students trained here from scratch, CE only, at 64 px; finished runs are reused):

- accuracy: the same calibration (300 training images, minmax), quantized with 8-bit and 7-bit
  weights, scored with onnxruntime's fused kernels against the FP32 graph on the test images
  (top-1 drop with its paired 95% interval, top-1 agreement);
- latency: both graphs, and the FP32 graph, at batch 1, 21 interleaved rounds after warm-up, medians
  (and the median of the per-round 7-bit/8-bit ratios), at 64 px and at 224 px (the same weights at
  224 px: latency only);
- ``--avx2``: both graphs run again on ``--avx2-images`` test images under
  ``benchmarks/avx2_emulated.sh`` (QEMU presenting an AVX2-only x86 CPU, as an AMD EPYC Rome
  without AVX-512 and VNNI; onnxruntime picks its kernels by CPUID), compared with this CPU;
- ``--qat``: ``python -m export.qat`` on each checkpoint with torch's AVX2 kernels
  (``ATEN_CPU_CAPABILITY=avx2``): its fidelity check must pass whatever kernels run it.

    python benchmarks/int8_isa.py [--students resnet18,timm:mobilenetv4_conv_small] [--per-class 200]
                                  [--test-per-class 1000] [--epochs 8] [--avx2] [--qat]

Writes ``benchmarks/results/int8_isa.json`` and prints a markdown table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.machine import machine_info, write_json  # noqa: E402

DEFAULT = "resnet18,timm:mobilenetv4_conv_small"
WORK = REPO / "data" / "int8-isa"


def train(arch: str, data_root: Path, epochs: int, seed: int) -> Path:
    """A CE-only student (teacher off) at 64 px; a finished run is reused."""
    from distill.config import load_config
    from pipeline.sweep import folder_name
    from distill.train import fit

    name = f"{folder_name(arch)}-seed{seed}-e{epochs}"
    best = WORK / "runs" / name / "best.pt"
    if best.is_file():
        return best
    cfg = load_config(REPO / "configs" / "imagefolder.yaml", {
        "data.root": str(data_root), "data.val_fraction": 0.2, "data.input_size": 64, "data.resize_size": 72,
        "data.batch_size": 32, "data.eval_batch_size": 200, "data.num_workers": 0, "student.arch": arch,
        "student.weights": "none", "teacher.enabled": False, "train.epochs": epochs, "train.lr": 0.001,
        "train.seed": seed, "train.out_dir": str(WORK / "runs"), "train.name": name, "train.progress": False})
    return fit(cfg)


def graphs(checkpoint: Path, work: Path, size: int | None = None) -> dict[str, Path]:
    """FP32, 8-bit and 7-bit U8S8 graphs of one checkpoint from one calibration (300 training images)."""
    from export.data import training_splits
    from export.int8.flavours import CPU, quantize
    from export.int8.graph import BatchReader, calibration_sample, preprocess
    from export.int8.ladder import Recipe
    from export.onnx_file import export_onnx
    from students.checkpoint import load_student
    from students.registry import deployable

    student, meta = load_student(checkpoint)
    hw = (size, size) if size else tuple(meta.input_size)
    student = deployable(student, hw)
    work.mkdir(parents=True, exist_ok=True)
    export_onnx(student, work / "fp32.onnx", list(hw), 17)
    preprocess(work / "fp32.onnx", work / "pre.onnx")
    if size:  # latency only: calibrated on noise at this size
        batches = [np.random.default_rng(i).normal(size=(32, 3, *hw)).astype(np.float32) for i in range(2)]
    else:
        pre = meta.preprocessing.to_dict()
        batches = calibration_sample(training_splits(meta, None).train, pre, 300, 0, 32)
    reader = BatchReader("input", batches)
    out = {"fp32": work / "pre.onnx"}
    for bits, qmax in (("8-bit", 127), ("7-bit", CPU.weight_qmax)):
        out[bits] = work / f"int8-{bits}.onnx"
        quantize(work / "pre.onnx", out[bits], dataclasses.replace(CPU, weight_qmax=qmax), Recipe("minmax", 300), reader)
    return out


def test_images(checkpoint: Path, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, 3, H, W) float32, y (N,)) of the checkpoint's test split through its preprocessing."""
    from export.data import training_splits
    from export.evaluation import ImageBatches
    from students.checkpoint import load_student

    _, meta = load_student(checkpoint)
    batches = list(ImageBatches(training_splits(meta, None).test, meta.preprocessing.to_dict(), 250, limit))
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def logits_of(path: Path, x: np.ndarray) -> np.ndarray:
    from export.evaluation import ort_runner
    run = ort_runner(path)  # onnxruntime with its fused integer kernels: what the device runs
    return np.concatenate([run(x[i:i + 250]) for i in range(0, len(x), 250)])


def accuracy(paths: dict[str, Path], x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    from export.evaluation import Predictions, accuracy_entry
    from export.int8.safety import u8s8_saturation
    from formats.records import plain

    ref = Predictions(logits_of(paths["fp32"], x), y)
    rows: dict[str, Any] = {"fp32_top1": round(ref.accuracy(), 6), "images": len(y)}
    for bits in ("8-bit", "7-bit"):
        rows[bits] = {**accuracy_entry(Predictions(logits_of(paths[bits], x), y), ref),
                      "saturation": plain(u8s8_saturation(paths[bits]))}
    return rows


def latency(paths: dict[str, Path], shape: tuple[int, ...], rounds: int = 21, seconds: float = 0.1) -> dict[str, float]:
    """Median batch-1 latency (ms) of each graph, and the median over rounds of the 7-bit/8-bit ratio:
    interleaved rounds (each about ``seconds`` per graph) so drift hits both graphs of a round alike."""
    from export.evaluation import ort_session

    sessions = {k: ort_session(p, threads=os.cpu_count() or 1) for k, p in paths.items()}
    x = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    per_round = {}
    for k, s in sessions.items():  # warm-up, and how many runs fill a round
        start = time.perf_counter()
        for _ in range(20):
            s.run(None, {"input": x})
        per_round[k] = max(10, int(seconds / ((time.perf_counter() - start) / 20)))
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            start = time.perf_counter()
            for _ in range(per_round[k]):
                s.run(None, {"input": x})
            times[k].append(1000 * (time.perf_counter() - start) / per_round[k])
    ratio = statistics.median(a / b for a, b in zip(times["7-bit"], times["8-bit"]))
    return {**{f"{k}_ms": round(statistics.median(v), 4) for k, v in times.items()}, "7bit_over_8bit": round(ratio, 4)}


def under_avx2(paths: dict[str, Path], x: np.ndarray, work: Path) -> dict[str, Any]:
    """Both INT8 graphs' logits on ``x`` in a process QEMU presents an AVX2-only CPU to, against this CPU's."""
    np.save(work / "x.npy", x)
    script = ("import json, sys, numpy as np, onnxruntime as ort\n"
              "from formats.isa import this_cpu\n"
              "x = np.load(sys.argv[1])\n"
              "for p in sys.argv[2:]:\n"
              "    so = ort.SessionOptions(); so.intra_op_num_threads = 1\n"
              "    s = ort.InferenceSession(p, so, providers=['CPUExecutionProvider'])\n"
              "    np.save(p + '.avx2.npy', np.concatenate([s.run(None, {'input': x[i:i+50]})[0] for i in range(0, len(x), 50)]))\n"
              "print(json.dumps(this_cpu()))\n")
    cmd = [str(REPO / "benchmarks" / "avx2_emulated.sh"), sys.executable, "-c", script, str(work / "x.npy"),
           str(paths["8-bit"]), str(paths["7-bit"])]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        raise SystemExit(f"the AVX2-emulated run failed:\n{proc.stderr[-2000:]}")
    out: dict[str, Any] = {"cpu_seen": json.loads(proc.stdout.strip().splitlines()[-1]), "images": len(x),
                           "seconds": round(time.perf_counter() - start, 1)}
    for bits in ("8-bit", "7-bit"):
        here, there = logits_of(paths[bits], x), np.load(str(paths[bits]) + ".avx2.npy")
        out[bits] = {"top1_agreement_with_this_cpu": round(float((here.argmax(1) == there.argmax(1)).mean()), 6),
                     "max_abs_logit_diff": float(np.abs(here - there).max())}
    return out


def qat(checkpoint: Path, work: Path, epochs: int) -> dict[str, Any]:
    """``python -m export.qat`` with torch forced to its AVX2 kernels (what an AMD EPYC without AVX-512
    runs); its fidelity check compares the torch graph with onnxruntime's fused kernels here."""
    out = work / "qat"
    cmd = [sys.executable, "-m", "export.qat", str(checkpoint), "--epochs", str(epochs), "--out", str(out), "--overwrite"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "ATEN_CPU_CAPABILITY": "avx2"})
    if proc.returncode != 0:
        return {"ok": False, "torch_kernels": "avx2", "error": proc.stderr.strip().splitlines()[-1:]}
    record = json.loads((out / "qat.json").read_text())
    return {"ok": True, "torch_kernels": "avx2", "seconds": round(time.perf_counter() - start, 1),
            **{f: {"fidelity": e["torch_vs_onnxruntime"], "chosen_epoch": e["chosen_epoch"], "ptq_vs_qat": e["ptq_vs_qat"]}
               for f, e in record["flavours"].items()}}


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| student | FP32 top-1 | weights | INT8 drop (pts, 95%) | agreement | worst pair sum | "
             "batch-1 ms 64 px | 224 px | AVX2 agreement with this CPU |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for bits in ("8-bit", "7-bit"):
            a, avx2 = r["accuracy"][bits], r.get("avx2", {}).get(bits, {})
            lines.append(f"| {r['student']} | {100 * r['accuracy']['fp32_top1']:.2f}% | {bits} | "
                         f"{a['top1_drop']:+.2f} ± {a['top1_drop_ci95']:.2f} | {a['agreement']:.4f} | "
                         f"{a['saturation']['worst_pair_sum']:,} | {r['latency_64'][f'{bits}_ms']:.3f} | "
                         f"{r['latency_224'][f'{bits}_ms']:.3f} | {avx2.get('top1_agreement_with_this_cpu', '-')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--students", default=DEFAULT)
    p.add_argument("--per-class", type=int, default=200)
    p.add_argument("--test-per-class", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--avx2", action="store_true", help="also run both graphs under benchmarks/avx2_emulated.sh")
    p.add_argument("--avx2-images", type=int, default=500)
    p.add_argument("--qat", action="store_true", help="also run python -m export.qat on each checkpoint")
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "int8_isa.json")
    args = p.parse_args(argv)

    from benchmarks.fashion_mnist import write_folder
    from formats.isa import this_cpu
    data = write_folder(WORK / f"fmnist-{args.per_class}-test{args.test_per_class}", args.per_class,
                        args.test_per_class, args.seed, WORK)
    rows = []
    for arch in args.students.split(","):
        checkpoint = train(arch, data, args.epochs, args.seed)
        with tempfile.TemporaryDirectory(prefix="int8-isa-") as tmp:
            work = Path(tmp)
            paths, large = graphs(checkpoint, work / "64"), graphs(checkpoint, work / "224", size=224)
            x, y = test_images(checkpoint)
            row = {"student": arch, "checkpoint": str(checkpoint), "accuracy": accuracy(paths, x, y),
                   "latency_64": latency(paths, x.shape[1:]), "latency_224": latency(large, (3, 224, 224))}
            if args.avx2:
                row["avx2"] = under_avx2(paths, x[:args.avx2_images], work)
            if args.qat:
                row["qat"] = qat(checkpoint, work, args.qat_epochs)
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
    result = {"machine": {**machine_info(), **this_cpu()}, "data": str(data), "per_class": args.per_class,
              "epochs": args.epochs, "rows": rows}
    write_json(args.out, result)
    print(markdown(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
