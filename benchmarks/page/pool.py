"""The results page: distillation from unlabeled images (kd_pool, the recipe pilots)."""
from __future__ import annotations

from typing import Any

from benchmarks.page.core import Results, bold, diff, mean_std, ms, pct, per_seed, px, ratio, seeds, table



# --- distillation from unlabeled images ----------------------------------------------------------


def section_pool(res: Results) -> list[str] | None:
    d = res.get("kd_pool.json")
    if d is None:
        return None
    students = ",".join(d["students"])
    epochs, no_labels = d["pool_epochs"], d.get("no_label_epochs", d["pool_epochs"])
    pool_epochs = _per_student(epochs, "{a}={e}", ",")
    passes = _per_student(epochs, "{e} for {a}", ", ")
    if no_labels != epochs:
        pool_epochs += " --no-labels-epochs " + _per_student(no_labels, "{a}={e}", ",")
        passes += " (`no-labels`: " + _per_student(no_labels, "{e} for {a}", ", ") + ")"
    from benchmarks.kd_pool import LABELED_LR

    t, lr = d["teacher"], d.get("pool_lr", {})
    rates = set(lr.values())
    flags = ("" if not lr or rates == {LABELED_LR} else f" --pool-lr {rates.pop():g}" if len(rates) == 1
             else " --pool-lr " + ",".join(f"{a}={r:g}" for a, r in lr.items()))
    out = ["## Distillation from unlabeled images", "",
           res.source("kd_pool.json", f"python benchmarks/kd_pool.py --students {students} --seeds {seeds(d['seeds'])} "
                                      f"--epochs {d['epochs']} --pool-epochs {pool_epochs}{flags}"),
           "", f"Setup: {d['setup']}. Arms: `baseline` (teacher off), `kd` (the shipped recipe on the labeled images), "
           f"`kd+unlabeled` (the same plus the pool, `data.unlabeled`), `no-labels` (the pool alone, the teacher's "
           f"zero-shot as the target, `data.labels=none`){rated(d)}. Labeled-only arms train "
           f"{d['epochs']} epochs, pool arms "
           f"{passes} passes over the pool. The teacher on the {t['test_images']:,} test images: zero-shot "
           f"{pct(t['zero_shot_test_top1'], 1)}%, calibrated anchors {pct(t['calibrated_test_top1'], 1)}%, "
           f"linear probe {pct(t['linear_probe_test_top1'], 1)}%.", ""]
    rows = []
    for arch, summary in d["students"].items():
        for i, (arm, row) in enumerate(summary["arms"].items()):
            pool = row.get("pool") or {}
            teacher = (f"teacher {pct(row['teacher_zero_shot_test_top1'])}%, student agrees on "
                       f"{mean_std(row['agreement_with_teacher'])}%") if "agreement_with_teacher" in row else ""
            if "teacher_balanced_zero_shot_test_top1" in row:  # the target the no-labels student distilled
                teacher += (f"; balanced prior {pct(row['teacher_balanced_zero_shot_test_top1'])}%, agrees on "
                            f"{mean_std(row['agreement_with_balanced_teacher'])}%")
            n = row["test_top1"].get("n", len(d["seeds"]))
            top1 = mean_std(row["test_top1"]) + (f" (n={n})" if n < len(d["seeds"]) else "")  # a run stopped early
            rows.append([arch if i == 0 else "", arm, top1, diff(row.get("diff_to_baseline")),
                         per_seed(row.get("diff_to_baseline")), f"{row['images_per_s']:.0f}",
                         str(pool.get("dropped_val_test_copies", "")), teacher])
    out += table(["student", "arm", "test top-1", "vs baseline", "per seed", "train img/s",
                  "pool copies of val/test dropped", "zero-shot on test"], rows)
    return out + pool_cost(d) + pool_cache(d) + pool_latency(d)


def _per_student(epochs: dict[str, int] | int, form: str, sep: str) -> str:
    """Epochs per student as ``form`` (``{a}`` the student, ``{e}`` its epochs) joined by ``sep``; one number as is."""
    return sep.join(form.format(a=a, e=e) for a, e in epochs.items()) if isinstance(epochs, dict) else str(epochs)


def rated(d: dict[str, Any]) -> str:
    """What an arm named ``-fresh`` or ``-lr<rate>`` is, where the results have one."""
    names = [arm for summary in d["students"].values() for arm in summary["arms"]]
    out = ""
    if any("-fresh" in arm for arm in names):
        out += ("; an arm named `-fresh` shows the student its own fresh crop of each pool image every epoch "
                "(`data.unlabeled_student_view=fresh`), the others the teacher's view")
    if any("-lr" in arm for arm in names):
        from benchmarks.kd_pool import LABELED_LR

        out += f"; an arm named `-lr<rate>` trains at that `train.lr` (the others at {LABELED_LR:g})"
    return out


def pool_cost(d: dict[str, Any]) -> list[str]:
    """Training images per second of a pool epoch against a labeled-only KD epoch, both from the cache."""
    lines = []
    for arch, summary in d["students"].items():
        arms = summary["arms"]
        pooled = next((arm for arm in arms if arm.startswith("kd+unlabeled")), None)
        if "kd" in arms and pooled:
            pool, labeled = arms[pooled]["images_per_s"], arms["kd"]["images_per_s"]
            lines.append(f"{arch}: {pool:.0f} images/s in a pool epoch against {labeled:.0f} in a labeled-only KD "
                         f"epoch, both from the cache: a pool image costs {labeled / pool:.2f}× a labeled one")
    return ["", "Training cost per image (median epoch of each run, mean over seeds): " + "; ".join(lines) + "."] \
        if lines else []


def pool_cache(d: dict[str, Any]) -> list[str]:
    rows = [[part, f"{c['images']:,}", str(c["views"]), f"{c['seconds']:.1f}",
             f"{c['views_per_s']:.1f}" if c.get("views_per_s") else "–"] for part, c in d.get("cache", {}).items()]
    return ["", "The teacher cache, per part:", ""] + table(["part", "images", "views", "seconds", "views/s"], rows) \
        if rows else []


def pool_latency(d: dict[str, Any]) -> list[str]:
    if "latency" not in d:
        return []
    sizes = list(d["latency"])
    rows = []
    for i, r in enumerate(d["latency"][sizes[0]]):
        cells = []
        for size in sizes:
            s = d["latency"][size][i]
            cells += [ms(s["fp32_p50_ms"]), ms(s["int8_p50_ms"]), ratio(s["int8_speedup_vs_resnet18_int8"])]
        rows.append([r["student"], *cells])
    header = ["student"] + [h for size in sizes for h in (f"FP32 {px(size)}", f"INT8 {px(size)}", "INT8 × ResNet-18")]
    return ["", "SingleStream p50 at batch 1 of each student's seed-0 `kd+unlabeled` bundle (`runtime.bench`):",
            ""] + table(header, rows)


def section_pool_recipe(res: Results) -> list[str] | None:
    """One table per ``kd_pool_recipe*.json`` (one student each)."""
    parts = [_pool_recipe(res, name) for name in sorted(res.data) if name.startswith("kd_pool_recipe")]
    return [line for part in parts for line in part] or None


def _pool_recipe(res: Results, name: str) -> list[str]:
    from benchmarks.kd_pool_recipe import DEFAULT_VARIANTS

    d = res.data[name]
    arch = d.get("arch", "resnet18")
    variants = ";".join(" ".join([f"e{r['pool_epochs']}", *(f"{k}={v}" for k, v in r["overrides"].items())])
                        for r in d["runs"])
    images = int(d["runs"][0].get("pool", "pool-5000").split("-")[-1])  # the runs before the option: 5,000
    command = "python benchmarks/kd_pool_recipe.py" + ("" if arch == "resnet18" else f" --arch {arch}") + (
        "" if images == 5000 else f" --pool-per-class {images // 10}") + (
        "" if variants == DEFAULT_VARIANTS else f' --variants "{variants}"')
    best = max(d["runs"], key=lambda r: r[d["chosen_on"]])
    out = [f"### Choosing the pool recipe: {arch}, {images:,} unlabeled images", "",
           res.source(name, command), "",
           f"Student {arch}, seed {d['seed']}, `kd+unlabeled`, one run per variant, chosen on the dev images "
           "(never on test); test top-1 for the record. The best on dev is in bold. Every variant changes the same "
           "reference: the student shown the teacher's own view of a pool image (`data.unlabeled_student_view="
           "teacher`) unless it says otherwise.", ""]
    rows = [[bold(" ".join([f"{r['pool_epochs']} pool epochs", *(f"`{k}={v}`" for k, v in r["overrides"].items())]),
                  r is best), bold(pct(r["dev_top1"]), r is best), pct(r["val_top1"]), pct(r["test_top1"])]
            for r in d["runs"]]
    return out + table(["variant", "dev top-1", "val top-1", "test top-1"], rows) + [""]
