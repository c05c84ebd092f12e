"""Choosing the unlabeled-pool recipe on the dev images, never on test: one seed, a few variants.

The setup of ``benchmarks/kd_pool.py`` (ResNet-18 from scratch at 64 px, 30 labeled Fashion-MNIST
images per class, the 5,000-image pool, the recommended recipe, final epoch); each variant is a
set of config overrides and a number of pool epochs. Every run is scored on the dev images
(``benchmarks/fashion_mnist.write_dev_folder``: 1,000 training images that no regime trains on
and the pool does not hold), which is what the choice reads; test top-1 is recorded beside it
only to be reported, and validation (60 images) is too small to choose on. Finished runs are
reused. Results: ``benchmarks/results/kd_pool_recipe.json``.

    python benchmarks/kd_pool_recipe.py [--variants "e3 method.w_unlabeled=3;e6 method.temperature=1"]
                                        [--arch timm:mobilenetv4_conv_small] [--pool-per-class 2000]
                                        [--out results.json]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.machine import machine_info, write_json  # noqa: E402

# What was tried, in order: the crop range of the pool's single view (0.35, as the labeled views, or the
# whole image), the pool term's weight, the temperature, more passes over the pool, the rate annealed every step.
C35, C1 = "data.unlabeled_crop_scale_min=0.35", "data.unlabeled_crop_scale_min=1.0"
DEFAULT_VARIANTS = ";".join([
    f"e3 {C35} method.w_unlabeled=1.0", f"e3 {C35} method.w_unlabeled=1.0 method.temperature=1",
    f"e3 {C35} method.w_unlabeled=3", f"e3 {C1} method.w_unlabeled=1.0", f"e3 {C1} method.w_unlabeled=3",
    f"e3 {C1} method.w_unlabeled=10", f"e6 {C1} method.w_unlabeled=1.0",
    f"e5 {C1} method.w_unlabeled=3 train.scheduler=cosine_steps"])


# The reference every variant changes: the student on the teacher's own view of a pool image, as the pilots
# before data.unlabeled_student_view=fresh (now configs/imagefolder.yaml's) ran, so their runs are found again.
REFERENCE = {"data.unlabeled_student_view": "teacher"}


def parse_variant(text: str) -> tuple[int, dict[str, Any]]:
    """``e3 key=value ...`` -> (pool epochs, overrides)."""
    import yaml

    head, *pairs = text.split()
    if not head.startswith("e") or not head[1:].isdigit():
        raise SystemExit(f"variant {text!r} must start with e<epochs>, e.g. 'e3 method.temperature=1'")
    return int(head[1:]), {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs)}


def run_variant(epochs: int, overrides: dict[str, Any], work: Path, dev: Path, arch: str = "resnet18",
                pool: str = "pool-5000") -> dict:
    from benchmarks.kd_ablation import checkpoint_top1
    from benchmarks.kd_gain import regime_config
    from distill.cache_ready import ensure_cache
    from distill.compare import train_or_reuse
    from distill.config import with_overrides

    cfg = regime_config(Path("data/kd-gain/fmnist-30"), Path("data/kd-gain/teacher"), work, epochs)
    size = "" if pool == "pool-5000" else f"{pool}-"  # the first runs' names: found again
    name = f"pilot-{arch.replace(':', '_')}-{size}e{epochs}-" + "-".join(
        f"{k}{_short(v)}" for k, v in overrides.items())
    cfg = with_overrides(cfg, {"data.unlabeled": str(work / pool), "train.select": "last", **REFERENCE,
                               "train.out_dir": str(work / "pilot"), "student.arch": arch, "train.name": name,
                               **overrides})
    ensure_cache(cfg)
    record = train_or_reuse(cfg, "kd+unlabeled", 0)
    return {"variant": name, "pool": pool, "pool_epochs": epochs, "overrides": overrides,
            "dev_top1": checkpoint_top1(Path(record.run) / "best.pt", dev), "test_top1": record.test_top1,
            "val_top1": record.val_top1, "epoch_s": record.epoch_s}


def _short(value: Any) -> str:
    """A value as a part of a run's name: a path (method.pool_student) by its run folder's name."""
    text = str(value)
    return text if "/" not in text else Path(text).parent.name[:60].replace(":", "_")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="';'-separated 'e<epochs> key=value ...'")
    parser.add_argument("--arch", default="resnet18", help="the student (student.arch) of every variant")
    parser.add_argument("--pool-per-class", type=int, default=500, help="unlabeled pool images per class")
    parser.add_argument("--work", default="data/kd-pool", help="relative to the repository")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "kd_pool_recipe.json"))
    args = parser.parse_args(argv)
    from benchmarks.fashion_mnist import write_dev_folder, write_folder, write_pool_folder
    from distill.offline_teacher import build

    args.out = str(Path(args.out).resolve())  # before the chdir below
    os.chdir(REPO)  # the runs record relative paths: the same runs are found again from any folder
    work, start = Path(args.work), time.perf_counter()
    build(Path("data/kd-gain/teacher"))
    write_folder(Path("data/kd-gain/fmnist-30"), 30)
    pool = write_pool_folder(work / f"pool-{10 * args.pool_per_class}", args.pool_per_class).name
    dev = write_dev_folder(Path("data/kd-gain/fmnist-dev"))
    rows = []
    for text in (v.strip() for v in args.variants.split(";") if v.strip()):
        rows.append(run_variant(*parse_variant(text), work, dev, args.arch, pool))
        print(f"{rows[-1]['variant']:<60} dev {100 * rows[-1]['dev_top1']:.1f}%  (test {100 * rows[-1]['test_top1']:.1f}%)",
              flush=True)
        write_json(Path(args.out), {"machine": machine_info(), "seed": 0, "arch": args.arch, "chosen_on": "dev_top1", "runs": rows,
                                    "wall_s": time.perf_counter() - start})
    best = max(rows, key=lambda r: r["dev_top1"])
    print(f"best on dev: {best['variant']} ({100 * best['dev_top1']:.1f}%); results: {args.out}")


if __name__ == "__main__":
    main()
