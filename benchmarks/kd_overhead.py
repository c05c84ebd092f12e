"""What distillation costs on top of plain training, with and without the teacher cache.

Side by side in one run, on the same machine and data, per teacher: the epoch time of
(a) the teacher-off baseline, (b) KD with the teacher online, (c) KD from the teacher cache,
plus the one-off cache build. Epochs are interleaved round-robin (a, b, c, a, b, c, ...) so
that drift in machine load hits all three alike; the first round is warm-up and the figure is
the median of the rest. Teachers use random weights (``pretrained=none``): they cost the same
time as trained ones.

    python benchmarks/kd_overhead.py [--teachers vl2lite-tiny,ViT-B-32] [--rounds 4]

Target: (c) within 1.15x of (a). Results: benchmarks/results/kd_overhead.json and a table.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.machine import machine_info, write_json  # noqa: E402


def bench_teacher(teacher: str, data_root: Path, work: Path, rounds: int, input_size: int, views: int,
                  workers: int, batch_size: int, cache_batch_size: int) -> dict:
    from distill.cache import build_cache
    from distill.config import load_config
    from distill.train import setup, train_one_epoch

    base = {"data.root": str(data_root), "data.input_size": input_size, "data.resize_size": input_size + input_size // 7,
            "data.num_workers": workers, "data.batch_size": batch_size, "teacher.model": teacher, "teacher.pretrained": "none",
            "teacher.cache_views": views, "teacher.cache_batch_size": cache_batch_size, "teacher.cache_shard_size": 256,
            "train.out_dir": str(work / "runs"), "train.progress": False, "train.epochs": rounds}
    cache_dir = work / f"cache-{teacher}"

    def cfg(**extra):
        return load_config(REPO / "configs" / "demo.yaml", {**base, **extra})

    start = time.perf_counter()
    build_cache(cfg(**{"teacher.cache": str(cache_dir)}))
    build_s = time.perf_counter() - start  # teacher construction and class texts included
    embed_s = sum(json.loads(f.read_text())["seconds"] for f in cache_dir.glob("shard_*.json"))  # views only
    runs = {"baseline": setup(cfg(**{"teacher.enabled": False})), "kd_online": setup(cfg(**{"teacher.cache": "online"})),
            "kd_cached": setup(cfg(**{"teacher.cache": str(cache_dir)}))}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for epoch in range(rounds):
        for name, run in runs.items():
            times[name].append(train_one_epoch(run, epoch)["epoch_time_s"])
    images = len(runs["baseline"].train_set)
    med = {k: statistics.median(v[1:]) for k, v in times.items()}  # round 0 is warm-up
    return {
        "teacher": teacher, "train_images": images, "input_size": input_size, "cache_views": views,
        "epoch_s": med, "epoch_s_all": times, "images_per_s": {k: images / v for k, v in med.items()},
        "ratio_online_vs_baseline": med["kd_online"] / med["baseline"],
        "ratio_cached_vs_baseline": med["kd_cached"] / med["baseline"],
        "cache_build_s": build_s, "cache_build_images_per_s": images * views / build_s,
        "cache_embed_s": embed_s, "cache_embed_views_per_s": images * views / embed_s,
        "target_cached_within_1_15x": med["kd_cached"] / med["baseline"] <= 1.15,
    }


def table(results: list[dict]) -> str:
    rows = ["| teacher | (a) baseline s/epoch | (b) KD online s/epoch | (c) KD cached s/epoch | b/a | c/a "
            "| cache build, all (K views) | cache views/s |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        e = r["epoch_s"]
        rows.append(f"| {r['teacher']} | {e['baseline']:.2f} | {e['kd_online']:.2f} | {e['kd_cached']:.2f} "
                    f"| {r['ratio_online_vs_baseline']:.2f}x | {r['ratio_cached_vs_baseline']:.2f}x "
                    f"| {r['cache_build_s']:.1f} s ({r['cache_views']} views, "
                    f"{r['cache_build_images_per_s']:.0f} views/s) | {r['cache_embed_views_per_s']:.0f} |")
    return "\n".join(rows)


def main(teachers: str = "vl2lite-tiny,ViT-B-32", rounds: int = 4, input_size: int = 112, views: int = 2,
         workers: int = 2, classes: int = 10, train_per_class: int = 24, batch_size: int = 32,
         cache_batch_size: int = 64, out: str = "benchmarks/results/kd_overhead.json") -> dict:
    from distill.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        data = generate(Path(tmp) / "birds", num_classes=classes, train_per_class=train_per_class,
                        test_per_class=4, size_range=(120, 200))
        results = [bench_teacher(t, data, Path(tmp), rounds, input_size, views, workers, batch_size,
                                 cache_batch_size)
                   for t in teachers.split(",")]
    report = {"benchmark": "kd_overhead", "machine": machine_info(), "student": "resnet18",
              "method": "epochs interleaved round-robin; median of rounds 2..N", "results": results}
    write_json(Path(out) if Path(out).is_absolute() else REPO / out, report)
    print(f"machine: {report['machine']['summary']}")
    print(table(results))
    return report


if __name__ == "__main__":
    from formats.cli import call_from_argv
    call_from_argv(main, prog="python benchmarks/kd_overhead.py")
