"""How much of the kd_gain result is model selection? Every run's last epoch, scored on test.

``benchmarks/kd_gain.py`` reports each run's best epoch by validation top-1, and at 30 images per
class the validation split holds 60 images: one image is 1.7 points, so picking the best of 40
epochs on it is noisy, and the noise lands on the paired differences. This script reads the
results JSON(s) of kd_gain, loads every run's ``last.pt`` (the final epoch of the cosine
schedule: no selection at all) and scores it on the same 1,000 test images, then prints, per
regime and arm, the test top-1 under both rules with the per-seed paired difference to the
baseline. Both rules are reported; neither is chosen here.

    python benchmarks/kd_gain_last_epoch.py [--results benchmarks/results/kd_gain.json,...]
"""
from __future__ import annotations

import argparse
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

DEFAULT_RESULTS = "benchmarks/results/kd_gain.json,benchmarks/results/kd_gain_30_more_seeds.json"


def last_epoch_top1(run_dir: Path) -> float:
    """Test top-1 of the run's final weights (``last.pt``), through the training evaluation transform."""
    import torch
    from torch.utils.data import DataLoader

    from distill.config import load_config
    from distill.data import EvalImages, load_dataset
    from students.checkpoint import load_student

    student, meta = load_student(run_dir / "last.pt")
    cfg = load_config(run_dir / "config.yaml")
    test = load_dataset(cfg.data).test
    loader = DataLoader(EvalImages(test, meta.preprocessing.to_dict()), batch_size=200)
    correct = 0
    with torch.inference_mode():
        for x, y in loader:
            correct += int((student(x).argmax(1) == y).sum())  # (B,) hits
    return correct / len(test)


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def summarise(runs: list[dict[str, Any]], baseline: str) -> dict[str, Any]:
    """Per arm, both rules: mean ± std of test top-1 and of the per-seed difference to the baseline."""
    by = {(r["arm"], r["seed"]): r for r in runs}
    arms = list(dict.fromkeys(r["arm"] for r in runs))
    out: dict[str, Any] = {}
    for arm in arms:
        seeds = sorted(s for a, s in by if a == arm)
        row: dict[str, Any] = {}
        for rule, key in (("best_val_epoch", "test_top1"), ("last_epoch", "test_top1_last")):
            row[rule] = {"test_top1": _stats([by[arm, s][key] for s in seeds])}
            paired = [s for s in seeds if (baseline, s) in by]
            if arm != baseline and paired:
                diffs = [by[arm, s][key] - by[baseline, s][key] for s in paired]
                row[rule]["diff_to_baseline"] = {**_stats(diffs), "per_seed": dict(zip(map(str, paired), diffs))}
        out[arm] = row
    return out


def table(regimes: list[dict[str, Any]]) -> str:
    lines = ["| images per class | arm | seeds | best-val-epoch test top-1 | vs baseline | last-epoch test top-1 | "
             "vs baseline | per seed (last epoch) |", "|---|---|---|---|---|---|---|---|"]
    for reg in regimes:
        for arm, row in reg["arms"].items():
            cells = [str(reg["per_class"]), arm, str(row["last_epoch"]["test_top1"]["n"])]
            for rule in ("best_val_epoch", "last_epoch"):
                t, d = row[rule]["test_top1"], row[rule].get("diff_to_baseline")
                cells.append(f"{100 * t['mean']:.2f} ± {100 * t['std']:.2f}")
                cells.append(f"{100 * d['mean']:+.2f} ± {100 * d['std']:.2f}" if d else "")
            d = row["last_epoch"].get("diff_to_baseline")
            cells.append(" ".join(f"{100 * v:+.1f}" for v in d["per_seed"].values()) if d else "")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from formats.files import read_json_object

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=DEFAULT_RESULTS, help="kd_gain results JSON files, comma-separated")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "kd_gain_last_epoch.json"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    merged: dict[int, dict[str, Any]] = {}  # per_class -> runs of every results file
    for name in args.results.split(","):
        data = read_json_object(REPO / name if not os.path.isabs(name) else Path(name),
                                "run benchmarks/kd_gain.py first (it writes the results this script reads)")
        for reg in data["regimes"]:
            entry = merged.setdefault(reg["per_class"], {"per_class": reg["per_class"], "epochs": reg["epochs"],
                                                         "baseline": reg["baseline"], "runs": [], "sources": []})
            entry["sources"].append(name)
            for run in reg["runs"]:
                entry["runs"].append({**run, "test_top1_last": last_epoch_top1(Path(run["run"]))})
                print(f"{reg['per_class']}/class {run['arm']} seed {run['seed']}: best-val epoch "
                      f"{100 * run['test_top1']:.1f}%, last epoch {100 * entry['runs'][-1]['test_top1_last']:.1f}%")
    regimes = [{**reg, "arms": summarise(reg["runs"], reg["baseline"])} for _, reg in sorted(merged.items())]
    write_json(Path(args.out), {"machine": machine_info(), "regimes": regimes, "wall_s": time.perf_counter() - start})
    print(f"\n{table(regimes)}\n\nresults: {args.out}")


if __name__ == "__main__":
    from formats.errors import run_cli
    run_cli(main)  # a run folder that is gone (no last.pt): one error line naming it
