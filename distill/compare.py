"""Seed-paired comparison: the teacher-off baseline and KD recipes, trained on the same seeds.

    python -m distill compare --config configs/imagefolder.yaml --seeds 0,1,2 [overrides]

Every arm is the config with a few overrides (the baseline: ``teacher.enabled=false``). The KD
arms read one teacher cache (``distill.cache_ready``: keyed by the setup, never by ``train.seed``
or the student, so the one a plain run of the config built is reused; an arm that changes what
the cache holds gets its own folder), built once before the runs, so the comparison costs what
training the students costs. Progress: a line per arm and seed when it starts and ends. For each seed the
arms share the seed (initialisation, shuffling, views), so the per-seed difference to the
baseline is paired. Runs land in ``<out_dir>/<name>/<arm>-seed<N>/``; ``compare.json`` beside
them holds every run and the summary. An interrupted comparison continues where it stopped:
finished runs are reused, an unfinished one resumes from its ``last.pt``.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any, Mapping

from distill.cache_ready import Inputs, ensure_cache, run_inputs, say, uses_cache, with_cache_folder
from distill.config import Config, DataConfig, with_overrides
from distill.config_parse import to_dict
from distill.preflight import preflight
from formats.errors import UserError
from formats.files import write_json
from formats.progress import duration, stage
from formats.records import to_dict as record_dict
from formats.run_results import RESULTS_FILE, RUN_RECORD_FILE, RunRecord, read_results, read_run_record, run_record

DEFAULT_ARMS: dict[str, dict[str, Any]] = {"baseline": {"teacher.enabled": False}, "kd": {}}
# A config with an unlabeled pool: what the labels alone give, what the teacher adds on them, what the pool adds.
POOL_ARMS: dict[str, dict[str, Any]] = {"baseline": {"teacher.enabled": False, "data.unlabeled": ""},
                                        "kd": {"data.unlabeled": ""}, "kd+unlabeled": {}}


def default_arms(cfg: Config) -> dict[str, dict[str, Any]]:
    """baseline / kd, and kd+unlabeled when the config names an unlabeled pool (one cache serves all)."""
    if cfg.data.labels == "none":
        raise UserError("compare pairs KD with the baseline trained on the labels; with data.labels=none there are "
                        "none to train it on: train with python -m distill, which reports the student beside the "
                        "teacher's zero-shot on the same images")
    return POOL_ARMS if cfg.data.unlabeled else DEFAULT_ARMS


def parse_seeds(seeds: Any) -> list[int]:
    """``0,1,2`` (a string, a tuple or an int, as the benchmarks' ``--seeds`` give it) as a list of seeds."""
    items = seeds if isinstance(seeds, (list, tuple)) else str(seeds).split(",")
    try:
        out = [int(str(s).strip()) for s in items if str(s).strip() != ""]
    except ValueError:
        raise UserError(f"--seeds {seeds!r} is not a list of integers: write it like --seeds 0,1,2") from None
    if not out or len(set(out)) != len(out):
        raise UserError(f"--seeds {seeds!r} must name at least one seed, each once: e.g. --seeds 0,1,2")
    return out


def compare(cfg: Config, seeds: list[int], arms: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Train every arm on every seed (reusing finished runs), in the arms' order; returns and writes the paired
    summary. A text override naming ``{seed}`` gets each run's seed (``seeded``)."""
    arms = default_arms(cfg) if arms is None else arms
    if not cfg.teacher.enabled:
        raise UserError("compare trains the teacher-off baseline itself: pass a KD config (teacher.enabled=true)")
    root = Path(cfg.train.out_dir) / cfg.train.name
    inputs = {cfg.data: preflight(cfg)}  # every file any arm needs, before the first minute of work
    arm_cfgs, cache_s = shared_caches({arm: with_overrides(cfg, overrides) for arm, overrides in arms.items()}, inputs)
    runs: list[RunRecord] = []
    with stage("compare", total=len(seeds) * len(arm_cfgs), unit="run") as step:
        for seed in seeds:
            for arm, arm_cfg in arm_cfgs.items():
                name = f"{arm}-seed{seed}"
                arm_cfg = with_overrides(arm_cfg, {**seeded(arms[arm], seed), "train.seed": seed, "train.name": name,
                                                   "train.out_dir": str(root)})
                finished = (root / name / "compare_run.json").is_file()
                step.note(f"{arm} seed {seed}: {'finished before, reused' if finished else 'started'}")
                runs.append(train_or_reuse(arm_cfg, arm, seed))
                if not finished:
                    step.note(f"{arm} seed {seed}: test top-1 {100 * runs[-1].test_top1:.2f}% in "
                              f"{duration(runs[-1].wall_s)} ({RUN_TIME})")
                step.advance()
                summary = summarise(runs, list(arms), seeds, cache_s)
                write_json(root / "compare.json", summary)  # after every run: progress survives a kill
    return summary


RUN_TIME = "training and evaluation, without the teacher cache"  # what a run's time covers


def seeded(overrides: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The arm's text overrides that name ``{seed}``, with the seed written in: an arm can build on a run of
    the same seed, e.g. ``method.pool_student: <root>/kd+unlabeled-seed{seed}/best.pt`` (self-training)."""
    return {k: v.replace("{seed}", str(seed)) for k, v in overrides.items() if isinstance(v, str) and "{seed}" in v}


def shared_caches(arm_cfgs: dict[str, Config], inputs: dict[DataConfig, Inputs]) -> tuple[dict[str, Config], float]:
    """Each arm's config with its teacher cache folder resolved (``auto``: keyed by the arm's setup, under
    its ``train.out_dir``, so arms, seeds and students of one setup, and plain runs, share one), and each
    folder built once; returns them and the seconds spent building. The arm with an unlabeled pool builds
    the pool's part too."""
    for c in arm_cfgs.values():
        if c.data not in inputs:
            inputs[c.data] = run_inputs(c)
    resolved = {arm: with_cache_folder(c, inputs[c.data][0]) for arm, c in arm_cfgs.items()}
    caches = {c.teacher.cache: c for c in sorted((c for c in resolved.values() if uses_cache(c)),
                                                 key=lambda c: bool(c.data.unlabeled))}
    seconds = 0.0
    for c in caches.values():
        ready = ensure_cache(c, inputs=inputs[c.data])
        say(ready.line())
        seconds += ready.seconds if ready.built else 0.0
    return resolved, seconds


def train_or_reuse(cfg: Config, arm: str, seed: int) -> RunRecord:
    from distill.train import fit

    run_dir = Path(cfg.train.out_dir) / cfg.train.name
    config = to_dict(cfg)
    if (run_dir / RUN_RECORD_FILE).is_file():
        record = read_run_record(run_dir)
        if not same_setup(record.plain_config(), config):  # never report a run of another setup as this one
            raise UserError(f"{run_dir} holds a finished run of another setup: pass a new train.name for this "
                            f"comparison, or delete {run_dir} to train it again")
        return record
    resume = (run_dir / "last.pt").is_file()
    start = time.perf_counter()
    fit(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, resume=resume)))
    results = read_results(run_dir)
    if results.test is None or results.val is None or results.best_epoch is None:
        raise UserError(f"{run_dir / RESULTS_FILE} lacks the finished run's metrics: train it again")
    record = run_record(arm=arm, seed=seed, run=str(run_dir), test_top1=results.test.top1, val_top1=results.val.top1,
                        best_epoch=results.best_epoch, wall_s=time.perf_counter() - start, resumed=resume,
                        epoch_s=_median_epoch_s(run_dir / "metrics.jsonl"), teacher=results.teacher, config=config)
    record.write(run_dir / RUN_RECORD_FILE)
    return record


# Keys that change how a run is watched, not what it computes.
NOT_SETUP = {"train.progress", "train.resume", "train.out_dir", "train.name", "data.num_workers",
             "data.check_images", "data.eval_batch_size"}


# Keys a run without an unlabeled pool never reads (a change of their default keeps labeled-only runs).
POOL_ONLY = {"data.unlabeled_ratio", "data.unlabeled_crop_scale_min", "data.unlabeled_student_view",
             "teacher.unlabeled_views", "method.w_unlabeled", "method.zero_shot_prior", "method.pool_student",
             "method.pool_student_weight"}


def same_setup(recorded: Any, current: dict[str, Any]) -> bool:
    """Whether a finished run's recorded config is this setup: equal on every key that changes the
    result; a key the record predates counts as equal when it holds its default (a field added to
    the config later must not orphan every finished run)."""
    if not isinstance(recorded, dict):
        return False
    old, new, default = (_cache_kind(_flat(d)) for d in (recorded, current, to_dict(Config())))
    ignored = NOT_SETUP | (_teacher_keys(old, new) if not old.get("teacher.enabled", True)
                           and not new.get("teacher.enabled", True) else set())
    if not old.get("data.unlabeled") and not new.get("data.unlabeled"):
        ignored |= POOL_ONLY
    for key in (old.keys() | new.keys()) - ignored:
        if key not in old:
            if new[key] != default.get(key, object()):
                return False
        elif old[key] != new.get(key, object()):
            return False
    return True


def _cache_kind(flat: dict[str, Any]) -> dict[str, Any]:
    """``teacher.cache`` as what it changes: cached or online; where a cache lies does not change a run
    (its contents are fixed by its fingerprint)."""
    if "teacher.cache" in flat:
        flat["teacher.cache"] = "online" if flat["teacher.cache"] in ("", "online") else "cached"
    return flat


def _teacher_keys(*flat: dict[str, Any]) -> set[str]:
    """The keys a teacher-off run never reads: the teacher's and the KD method's."""
    return {k for f in flat for k in f if k.startswith(("teacher.", "method.")) and k != "teacher.enabled"}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _median_epoch_s(path: Path) -> float:
    times = [json.loads(line)["epoch_time_s"] for line in path.read_text().splitlines() if line.strip()]
    return statistics.median(times)


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def summarise(records: list[RunRecord], arms: list[str], seeds: list[int], cache_s: float) -> dict[str, Any]:
    """Mean ± std of test top-1 per arm, and per-seed paired differences to the first arm (compare.json: a
    report, which no stage reads back; each run's own record is its compare_run.json)."""
    runs = [record_dict(r) for r in records]
    by = {(r["arm"], r["seed"]): r for r in runs}
    base = arms[0]
    out: dict[str, Any] = {"seeds": seeds, "baseline": base, "cache_build_s": cache_s, "arms": {}, "runs": runs}
    for arm in arms:
        done = [s for s in seeds if (arm, s) in by]
        if not done:
            continue
        row = {"test_top1": _mean_std([by[arm, s]["test_top1"] for s in done]),
               "val_top1": _mean_std([by[arm, s]["val_top1"] for s in done]),
               "wall_s": _mean_std([by[arm, s]["wall_s"] for s in done]),
               "epoch_s": _mean_std([by[arm, s]["epoch_s"] for s in done])}
        paired = [s for s in done if (base, s) in by]
        if arm != base and paired:
            diffs = [by[arm, s]["test_top1"] - by[base, s]["test_top1"] for s in paired]
            row["diff_to_baseline"] = {**_mean_std(diffs), "per_seed": dict(zip(map(str, paired), diffs))}
            row["epoch_s_ratio_to_baseline"] = statistics.fmean(
                by[arm, s]["epoch_s"] / by[base, s]["epoch_s"] for s in paired)
        out["arms"][arm] = row
    return out


def format_table(summary: dict[str, Any]) -> str:
    """The paired table as text: one line per arm, test top-1 mean ± std, paired difference."""
    width = max([len("arm"), *map(len, summary["arms"])])
    lines = [f"{'arm':<{width}} {'test top-1 (mean ± std)':>24} {'vs ' + summary['baseline']:>16} "
             f"{'per seed':>20} {'epoch s':>8} {'run s':>8}"]
    for arm, row in summary["arms"].items():
        t, d = row["test_top1"], row.get("diff_to_baseline")
        diff = f"{100 * d['mean']:+.2f} ± {100 * d['std']:.2f}" if d else ""
        per_seed = " ".join(f"{100 * v:+.1f}" for v in d["per_seed"].values()) if d else ""
        top1 = f"{100 * t['mean']:.2f} ± {100 * t['std']:.2f} (n={t['n']})"
        lines.append(f"{arm:<{width}} {top1:>24} {diff:>16} {per_seed:>20} "
                     f"{row['epoch_s']['mean']:>8.2f} {row['wall_s']['mean']:>8.1f}")
    built = summary.get("cache_build_s", 0.0)
    cache = (f"built once before the runs, in {duration(built)}" if built else "reused from an earlier run")
    online = any(r["config"]["teacher"]["enabled"] and r["config"]["teacher"]["cache"] == "online"
                 for r in summary["runs"])
    lines.append(f"run s: {RUN_TIME} ({cache})" + ("; runs with teacher.cache=online include the teacher's passes"
                                                    if online else ""))
    return "\n".join(lines)
