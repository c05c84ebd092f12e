"""Post-training INT8 against quantization-aware INT8 on the real-data benchmark, side by side.

Students of ``benchmarks/students.py`` (Fashion-MNIST, 30 training images per class, the assembled
teacher, the recommended recipe, from scratch at 64 px; finished runs are reused). Each
checkpoint is exported three ways and scored against its own FP32 top-1 on all 10,000 Fashion-MNIST
test images (``--test-per-class 100``: the 1,000 of the accuracy benchmarks; the same training
images either way, so the same validation split). A drop is a difference of the few images whose
top-1 changed, so it is reported with its paired 95% interval: with 1,000 images and a 0.91
agreement that is +-1.9 points, too wide to tell a 0.5-point drop from a 1.5-point one.

- ``ptq``: ``--int8 --no-remedies``: one calibration (minmax, 300 images), every node INT8;
- ``ptq-ladder``: ``--int8`` as shipped: other calibrations, more images, then up to 6 nodes kept
  in float until the budget (1 point, judged on validation) is met;
- ``qat``: ``python -m export.qat`` (the settings below), then ``--int8 --qat``: every node INT8,
  no calibration at export.

    python benchmarks/qat.py [--students mobilenet_v3_small,resnet18] [--seeds 0] [--epochs 4]

Writes ``benchmarks/results/qat.json``; both INT8 graphs are scored with onnxruntime on this CPU
(U8S8, the graph it runs, and S8S8, TensorRT's graph, by its Q/DQ reference semantics).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.machine import machine_info, write_json  # noqa: E402

DEFAULT = "timm:efficientnet_lite0,timm:mobilenetv4_conv_small,resnet18"
ARTIFACTS = {"model.int8.onnx": "u8s8", "model.int8.trt.onnx": "s8s8"}


def export(checkpoint: Path, out: Path, data_root: Path, **options: Any) -> dict[str, Any]:
    """One bundle; returns its FP32 reference, each INT8 flavour's figures, and the wall time."""
    from export import ExportOptions, export_bundle

    start = time.perf_counter()
    export_bundle(checkpoint, out, ExportOptions(backends=("int8",), best_effort=True, overwrite=True, data_root=str(data_root),
                                                 **options))
    manifest = json.loads((out / "manifest.json").read_text())
    row: dict[str, Any] = {"fp32_top1": manifest["reference"]["top1"], "seconds": round(time.perf_counter() - start, 1)}
    for entry in manifest["artifacts"]:
        if entry["file"] in ARTIFACTS:
            q = entry["quantization"]
            row[ARTIFACTS[entry["file"]]] = {
                "top1": entry["top1"], "top1_drop": entry["top1_drop"], "top1_drop_ci95": entry["top1_drop_ci95"],
                "agreement": entry["agreement"],
                "within_budget": entry["budget"]["within_budget"], "nodes_in_float": len(q["excluded_nodes"]),
                "method": q["method"]}
    return row


def measure(checkpoint: Path, work: Path, epochs: int, data_root: Path) -> dict[str, Any]:
    from export import QatSettings, quantization_aware_training

    row = {"ptq": export(checkpoint, work / "ptq", data_root, remedies=False),
           "ptq-ladder": export(checkpoint, work / "ptq-ladder", data_root)}
    start = time.perf_counter()
    folder = quantization_aware_training(checkpoint, QatSettings(epochs=epochs, out=work / "qat-graphs",
                                                                 overwrite=True, data_root=str(data_root)))
    row["qat_record"] = json.loads((folder / "qat.json").read_text())
    trained = time.perf_counter() - start
    row["qat"] = {**export(checkpoint, work / "qat", data_root, qat=str(folder)), "training_seconds": round(trained, 1)}
    return row


def main(argv: list[str] | None = None) -> None:
    from benchmarks.students import train_students

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", default=DEFAULT)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=10, help="QAT epochs")
    parser.add_argument("--train-epochs", type=int, default=40)
    parser.add_argument("--work", default=str(REPO / "data" / "kd-gain"))
    parser.add_argument("--test-per-class", type=int, default=1000,
                        help="test images per class to score on (1000: all of Fashion-MNIST's test set)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "qat.json"))
    args = parser.parse_args(argv)
    from benchmarks.fashion_mnist import write_folder

    work = Path(args.work)
    students, seeds = args.students.split(","), [int(s) for s in args.seeds.split(",")]
    runs = train_students(students, seeds, work, args.train_epochs)
    # the training images of the runs (30 per class, same seed), with more test images
    data_root = write_folder(work / f"fmnist-30-test{10 * args.test_per_class}", 30, args.test_per_class)
    rows = []
    for arch in students:
        for run in runs[arch]:
            checkpoint = Path(run["run"]) / "best.pt"
            scratch = work / "qat" / checkpoint.parent.name
            row = {"student": arch, "seed": run["seed"], "checkpoint": str(checkpoint),
                   **measure(checkpoint, scratch, args.epochs, data_root)}
            rows.append(row)
            print(format_row(row), flush=True)
            shutil.rmtree(scratch, ignore_errors=True)
    write_json(Path(args.out), {"machine": machine_info(), "qat_epochs": args.epochs, "budget_points": 1.0,
                                "split": "test", "test_images": 10 * args.test_per_class, "rows": rows})
    print("\n".join(table(rows)))


def format_row(row: dict[str, Any]) -> str:
    return (f"{row['student']} seed {row['seed']}: FP32 {100 * row['ptq']['fp32_top1']:.2f}%, " + "; ".join(
        f"{flavour} " + ", ".join(f"{k} {row[k][flavour]['top1_drop']:+.2f} ({row[k][flavour]['nodes_in_float']} in float)"
                                  for k in ("ptq", "ptq-ladder", "qat")) for flavour in ARTIFACTS.values()))


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: per student and INT8 graph, the test top-1 drop vs FP32 (± its paired 95% interval) and the
    agreement with FP32's top-1."""
    lines = ["| student | seed | INT8 graph | FP32 top-1 | PTQ, all INT8: drop / agreement | PTQ ladder: drop / "
             "agreement (nodes in float) | QAT, all INT8: drop / agreement | QAT training |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for flavour in ARTIFACTS.values():
            ptq, ladder, qat = (r[k][flavour] for k in ("ptq", "ptq-ladder", "qat"))
            lines.append(f"| {r['student']} | {r['seed']} | {flavour} | {100 * r['ptq']['fp32_top1']:.2f}% | "
                         f"{_drop(ptq)} / {ptq['agreement']:.3f} | {_drop(ladder)} / "
                         f"{ladder['agreement']:.3f} ({ladder['nodes_in_float']}) | {_drop(qat)} / "
                         f"{qat['agreement']:.3f} | {r['qat']['training_seconds']:.0f} s |")
    return lines


def _drop(figures: dict[str, Any]) -> str:
    return f"{figures['top1_drop']:+.2f} ± {figures['top1_drop_ci95']:.2f}"


if __name__ == "__main__":
    main()
