"""Distil from unlabeled images: what a pool of unlabeled images adds, with a real teacher on real data.

The setup of ``benchmarks/kd_gain.py`` (the real teacher assembled offline by
``distill/offline_teacher.py``, Fashion-MNIST with 30 labeled training images per class, a fifth
of them held out for validation, the same 1,000 test images) plus an unlabeled pool: 500 training
images per class that no regime trains on and the dev split does not hold, written into one flat
folder (labels dropped; ``benchmarks/fashion_mnist.write_pool_folder``). Per student (from scratch
at 64 px, final epoch, the same seeds), four arms through ``distill.compare`` and one teacher cache:

- ``baseline``: cross-entropy on the labeled images (teacher off);
- ``kd``: the recommended recipe (``configs/imagefolder.yaml``) on the labeled images only;
- ``kd+unlabeled``: the same plus the pool (``data.unlabeled``), the student on its own fresh crops of
  the pool images as the config ships (``-fresh`` in the arm's name; ``-lr<rate>`` at another rate);
- ``no-labels``: the pool only, the teacher's zero-shot over the prompts as the target, its class
  prior balanced over the pool (``data.labels=none``), on the teacher's views; the labeled folders
  only measure.

It reports the teacher's own top-1 on the test images (zero-shot, calibrated, linear probe), how
many pool images were dropped as copies of validation or test images (must be 0), the cache cost
per image of each part, the training cost per image of a pool epoch against a labeled one, and each
student's INT8 latency at batch 1 (seed 0 of ``kd+unlabeled`` exported with ``--int8``, measured with
``runtime.bench`` at 64 and 224 px). Results: ``benchmarks/results/kd_pool.json``.

    pip install -e '.[kd-bench]'   # the real teacher parts
    python benchmarks/kd_pool.py [--students resnet18,timm:mobilenetv4_conv_small] [--seeds 0,1,2]
                                 [--epochs 40] [--pool-epochs resnet18=10,timm:mobilenetv4_conv_small=12]
                                 [--pool-lr 0.003] [--no-labels-epochs resnet18=5,timm:mobilenetv4_conv_small=6]
                                 [--pool-per-class 500]
"""
from __future__ import annotations

import argparse
import json
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

DEFAULT_STUDENTS = "resnet18,timm:mobilenetv4_conv_small"
LABELED_LR = 0.001  # train.lr of benchmarks/kd_gain.regime_config: the labeled-only arms'


def arms(epochs: int, pool_epochs: int, pool_lr: float, view: str,
         no_label_epochs: int | None = None) -> dict[str, dict[str, Any]]:
    """The four arms as overrides of the pool config (a labeled epoch is 240 images, a pool epoch 5,000). The arm
    with labels and the pool trains at ``pool_lr`` with the student's ``view`` of a pool image
    (``data.unlabeled_student_view``), named for both; ``no-labels`` (``no_label_epochs``, default
    ``pool_epochs``) shows the student the teacher's view."""
    labeled = {"data.unlabeled": "", "train.epochs": epochs}
    return {"baseline": {"teacher.enabled": False, **labeled}, "kd": labeled,
            pool_arm(pool_lr, view): {"train.epochs": pool_epochs, "train.lr": pool_lr,
                                      "data.unlabeled_student_view": view},
            "no-labels": {"data.labels": "none", "train.epochs": no_label_epochs or pool_epochs,
                          "data.unlabeled_student_view": "teacher"}}


def pool_arm(lr: float, view: str = "teacher") -> str:
    """``kd+unlabeled`` at the labeled arms' rate on the teacher's views; ``-fresh`` with the student's own fresh
    views, ``-lr0.003`` at another rate (each its own runs)."""
    return "kd+unlabeled" + ("-fresh" if view == "fresh" else "") + ("" if lr == LABELED_LR else f"-lr{lr:g}")


def pool_config(work: Path, teacher_dir: Path, pool: Path, arch: str, per_class: int = 30):
    from benchmarks.fashion_mnist import write_folder
    from benchmarks.kd_gain import regime_config
    from distill.config import with_overrides
    from pipeline.sweep import folder_name

    cfg = regime_config(write_folder(Path(f"data/kd-gain/fmnist-{per_class}"), per_class), teacher_dir, work, 1)
    return with_overrides(cfg, {"data.unlabeled": str(pool), "student.arch": arch, "train.select": "last",
                                "train.out_dir": str(work / "runs"), "train.name": f"pool-{folder_name(arch)}"})


def per_student(text: str, students: list[str], kind: type = int) -> dict[str, Any]:
    """``6`` or ``resnet18=6,timm:mobilenetv4_conv_small=20`` -> a value per student (``kind``: int or float)."""
    if "=" not in text:
        return {arch: kind(text) for arch in students}
    named = {k.strip(): kind(v) for k, v in (item.split("=", 1) for item in text.split(",") if item.strip())}
    first = next(iter(named.values()))
    return {arch: named.get(arch, first) for arch in students}


def cache_cost(cache: Path) -> dict[str, Any]:
    """Seconds per teacher view of each part of the cache, from its shard records."""
    out = {}
    for meta_path in [cache / "meta.json", *sorted(cache.glob("unlabeled-*/meta.json"))]:
        meta, part = json.loads(meta_path.read_text()), meta_path.parent
        seconds = sum(json.loads(p.read_text())["seconds"] for p in part.glob("shard_*.json"))
        views = meta["num_images"] * meta["num_views"]
        out["labeled" if part == cache else "unlabeled"] = {
            "images": meta["num_images"], "views": meta["num_views"], "seconds": seconds,
            "views_per_s": views / seconds if seconds else None}
    return out


def run_student(arch: str, seeds: list[int], work: Path, teacher_dir: Path, pool: Path, epochs: int,
                pool_epochs: int, pool_lr: float = LABELED_LR, no_label_epochs: int | None = None) -> dict[str, Any]:
    from distill.compare import compare, format_table
    from formats.records import to_dict as record_dict
    from formats.run_results import read_results

    cfg = pool_config(work, teacher_dir, pool, arch)
    view = cfg.data.unlabeled_student_view  # the shipped recipe's (configs/imagefolder.yaml)
    summary = compare(cfg, seeds, arms(epochs, pool_epochs, pool_lr, view, no_label_epochs))
    runs = {(r["arm"], r["seed"]): Path(r["run"]) for r in summary["runs"]}
    for arm, row in summary["arms"].items():
        results = [read_results(runs[arm, s]) for s in seeds if (arm, s) in runs]
        row["images_per_s"] = statistics.fmean(_median_rate(runs[arm, s]) for s in seeds if (arm, s) in runs)
        if arm == "no-labels":
            row["teacher_zero_shot_test_top1"] = statistics.fmean(r.test.teacher_zero_shot_top1 for r in results)
            row["agreement_with_teacher"] = _mean_std([r.test.agreement_with_teacher for r in results])
            if all(r.test.teacher_balanced_zero_shot_top1 is not None for r in results):  # the target it distilled
                row["teacher_balanced_zero_shot_test_top1"] = statistics.fmean(
                    r.test.teacher_balanced_zero_shot_top1 for r in results)
                row["agreement_with_balanced_teacher"] = _mean_std(
                    [r.test.agreement_with_balanced_teacher for r in results])
        if results[0].unlabeled is not None:
            row["pool"] = record_dict(results[0].unlabeled)  # the same pool and leakage check for every seed
    print(f"\n{arch}:\n{format_table(summary)}")
    del summary["runs"]  # each run's own record is its compare_run.json
    summary["seed0_kd_unlabeled"] = str(runs[pool_arm(pool_lr, view), seeds[0]] / "best.pt")
    return summary


def _median_rate(run: Path) -> float:
    rates = [json.loads(line)["images_per_s"] for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    return statistics.median(rates)


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def latency(students: dict[str, Path], work: Path) -> dict[str, list[dict[str, Any]]]:
    """INT8 p50 at batch 1 per student (64 and 224 px), and the speed-up over ResNet-18 INT8 (same run)."""
    from benchmarks.students import bench, export_pair, latency_table
    from pipeline.sweep import folder_name

    bundles = {arch: export_pair(ckpt, work / "bundles" / "pool" / folder_name(arch), folder_name(arch))
               for arch, ckpt in students.items()}
    names = {arch: folder_name(arch) for arch in students}
    return {size: latency_table(bench([bundles[a][i] for a in students], work / "bench" / f"pool-{size}"), names)
            for i, size in enumerate(("64px", "224px"))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", default=DEFAULT_STUDENTS, help="comma-separated; resnet18 is always one")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of the labeled-only arms (as kd_gain.py)")
    parser.add_argument("--pool-epochs", default="5", help="epochs (passes over the pool) of the pool arms: N for "
                        "every student, or arch=N,arch=N (a student not named gets the first N)")
    parser.add_argument("--no-labels-epochs", default="", help="epochs of the no-labels arm, as --pool-epochs "
                        "(default: --pool-epochs)")
    parser.add_argument("--pool-per-class", type=int, default=500, help="unlabeled pool images per class")
    parser.add_argument("--work", default="data/kd-pool", help="pool, cache and runs (relative to the repository)")
    parser.add_argument("--pool-lr", default=str(LABELED_LR), help="train.lr of the arms with labels and the pool: "
                        "one rate, or arch=rate,arch=rate (chosen on dev by kd_pool_recipe.py)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "kd_pool.json"))
    args = parser.parse_args(argv)
    from benchmarks.fashion_mnist import write_pool_folder
    from benchmarks.kd_gain import teacher_on_test
    from distill.offline_teacher import build
    from distill.cache_ready import ensure_cache, with_cache_folder
    from distill.compare import parse_seeds

    students = [s.strip() for s in args.students.split(",") if s.strip()]
    students = ["resnet18", *(s for s in students if s != "resnet18")]
    args.out = str(Path(args.out).resolve())  # before the chdir below
    os.chdir(REPO)  # the cache and the runs record relative paths: found again from any folder
    seeds, work, start = parse_seeds(args.seeds), Path(args.work), time.perf_counter()
    teacher_dir = build(Path("data/kd-gain/teacher"))
    pool = write_pool_folder(work / f"pool-{10 * args.pool_per_class}", args.pool_per_class)
    cfg = pool_config(work, teacher_dir, pool, students[0])
    ready = ensure_cache(with_cache_folder(cfg))
    cache_s = ready.seconds if ready.built else 0.0
    results: dict[str, Any] = {
        "machine": machine_info(), "seeds": seeds, "epochs": args.epochs,
        "setup": "kd_gain 30 labeled images per class (24 train + 6 val), the same 1,000 test images, "
                 f"{10 * args.pool_per_class} unlabeled training images, students from scratch at 64 px, final epoch",
        "teacher": teacher_on_test(cfg), "cache_build_s": cache_s, "cache": cache_cost(Path(cfg.teacher.cache)),
        "students": {}}
    pool_epochs, pool_lr = per_student(args.pool_epochs, students), per_student(args.pool_lr, students, float)
    no_label_epochs = per_student(args.no_labels_epochs or args.pool_epochs, students)
    results["pool_epochs"], results["pool_lr"], results["no_label_epochs"] = pool_epochs, pool_lr, no_label_epochs
    for arch in students:
        results["students"][arch] = run_student(arch, seeds, work, teacher_dir, pool, args.epochs, pool_epochs[arch],
                                                pool_lr[arch], no_label_epochs[arch])
        results["wall_s"] = time.perf_counter() - start
        write_json(Path(args.out), results)  # progress survives a kill
    results["latency"] = latency({a: Path(s["seed0_kd_unlabeled"]) for a, s in results["students"].items()}, work)
    results["wall_s"] = time.perf_counter() - start
    write_json(Path(args.out), results)
    print_summary(results)
    print(f"\nresults: {args.out} ({results['machine']['summary']}, {results['wall_s'] / 60:.1f} min)")


def print_summary(results: dict[str, Any]) -> None:
    t = results["teacher"]
    print(f"\nteacher on the {t['test_images']} test images: zero-shot {100 * t['zero_shot_test_top1']:.1f}%, "
          f"calibrated {100 * t['calibrated_test_top1']:.1f}%, linear probe {100 * t['linear_probe_test_top1']:.1f}%")
    lat = {r["student"]: r for r in results["latency"]["64px"]}
    for arch, summary in results["students"].items():
        for arm, row in summary["arms"].items():
            d = row.get("diff_to_baseline")
            diff = f" ({100 * d['mean']:+.2f} vs baseline)" if d else ""
            print(f"{arch:<32} {arm:<13} {100 * row['test_top1']['mean']:6.2f} ± {100 * row['test_top1']['std']:.2f}"
                  f"{diff}  {row['images_per_s']:.0f} img/s")
        print(f"{arch:<32} INT8 batch 1 at 64 px: {lat[arch]['int8_p50_ms']:.3f} ms "
              f"({lat[arch]['int8_speedup_vs_resnet18_int8']:.2f}x ResNet-18 INT8)")


if __name__ == "__main__":
    main()
