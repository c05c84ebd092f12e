"""Writes docs/results.md, the measured figures, from the JSON files in benchmarks/results.

Only current figures: one renderer per result family, each table headed with what it measures,
the command that wrote its JSON, the machine it ran on and the date. Every number on the page is
read (or computed) from a JSON file; none is typed here. The JSON files record no date, so the
date is the one a file records where it has one, else the day (UTC) of the last commit that
changed it (today for a file not committed yet: the day its commit will carry).

Files whose figures are history (superseded ablation rounds, re-runs replaced by later ones) are
listed in ``SUPERSEDED`` and left out; a JSON file that is neither rendered nor listed there makes
``--check`` (and ``tests/test_results_page.py``) fail, so no result is added silently.

    python benchmarks/results_page.py           # rewrite docs/results.md
    python benchmarks/results_page.py --check   # exit 1 if docs/results.md is not what the JSON files give
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"
PAGE = REPO / "docs" / "results.md"

# Result files whose figures are history but which stay in the folder (other scripts read them), left
# out of the page. Superseded files are deleted (git keeps them): a script that writes one again makes
# a current result, which then needs a renderer.
SUPERSEDED: dict[str, str] = {}

SHIPPED_CONFIG = REPO / "configs" / "imagefolder.yaml"


# --- loading -------------------------------------------------------------------------------------


def commit_dates() -> dict[str, str]:
    """File name -> YYYY-MM-DD (UTC) of the last commit that changed it; today for new or modified files."""
    env = {**os.environ, "TZ": "UTC"}
    try:
        log = subprocess.run(["git", "log", "--format=@%ad", "--date=format-local:%Y-%m-%d", "--name-only", "--",
                              "benchmarks/results"], cwd=REPO, env=env, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "benchmarks/results"],
                                cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return {}
    dates: dict[str, str] = {}
    day = ""
    for line in log.stdout.splitlines():
        if line.startswith("@"):
            day = line[1:]
        elif line.strip():
            dates.setdefault(Path(line).name, day)  # newest first: the first date seen is the last change
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    for line in status.stdout.splitlines():
        dates[Path(line[3:].strip()).name] = today
    return dates


@dataclass
class Results:
    """The JSON files of benchmarks/results by name, their dates, and which ones the page used."""

    data: dict[str, dict[str, Any]]
    dates: dict[str, str]
    used: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, folder: Path = RESULTS) -> "Results":
        data = {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
        return cls(data, commit_dates())

    def get(self, name: str) -> dict[str, Any] | None:
        return self.data.get(name)

    def source(self, name: str, command: str) -> str:
        """One provenance line: the command, the file, the machine, the date; marks the file as rendered."""
        self.used.add(name)
        d = self.data[name]
        date = d.get("date") or (d.get("machine") or {}).get("date") or self.dates.get(name, "date unknown")
        link = f"[`{name}`](../benchmarks/results/{name})"
        return f"- `{command}` → {link} · {machine(d.get('machine') or {})} · {date}"


def machine(m: dict[str, Any]) -> str:
    """The machine as the JSON describes it (``summary`` where the script recorded one)."""
    if m.get("summary"):
        text = m["summary"]
    else:
        cores = m.get("cores") or m.get("cpu_cores")
        text = ", ".join(str(x) for x in (f"{cores}-core {m.get('cpu', '?')}", m.get("platform")) if x)
    extra = [f"ISA {m['isa']}" if m.get("isa") else "", "AVX-512 VNNI" if m.get("avx512_vnni") else "",
             f"onnxruntime {m['versions']['onnxruntime']}" if "onnxruntime" in m.get("versions", {}) else ""]
    return ", ".join([text, *(e for e in extra if e)])


# --- formatting ----------------------------------------------------------------------------------


def pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def pts(x: float | None, digits: int = 2) -> str:
    return "" if x is None else f"{100 * x:+.{digits}f}"


def points(a: dict[str, Any]) -> str:
    """A top-1 drop already in points, with its paired 95% interval."""
    return f"{a['top1_drop']:+.2f} ± {a['top1_drop_ci95']:.2f}"


def mean_std(ms: dict[str, float] | None) -> str:
    return "" if not ms else f"{pct(ms['mean'])} ± {pct(ms['std'])}"


def diff(ms: dict[str, float] | None) -> str:
    return "" if not ms else f"{pts(ms['mean'])} ± {pct(ms['std'])}"


def per_seed(ms: dict[str, Any] | None) -> str:
    return "" if not ms else " ".join(pts(v, 1) for v in ms["per_seed"].values())


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def bold(text: str, on: bool) -> str:
    return f"**{text}**" if on and text else text


def seeds(values: list[int]) -> str:
    return ",".join(map(str, values))


# --- distillation with a real teacher ------------------------------------------------------------


def shipped_weights() -> tuple[float, float]:
    method = yaml.safe_load(SHIPPED_CONFIG.read_text())["method"]
    return float(method["w_vis"]), float(method["w_ling"])


def kd_arm(summary: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The one arm of a confirm run that is not its baseline."""
    return next((a, row) for a, row in summary["arms"].items() if a != summary["baseline"])


def weights_label(overrides: dict[str, Any]) -> str:
    return f"w_vis {overrides.get('method.w_vis', 1.0):g}, w_ling {overrides.get('method.w_ling', 1.0):g}"


def section_kd_gain(res: Results) -> list[str] | None:
    gain = res.get("kd_gain.json")
    if gain is None:
        return None
    probe = {r["per_class"]: r["teacher"] for r in gain["regimes"]}
    out = ["## Distillation with a real teacher", "",
           f"The teacher: {gain['teacher']} (`distill/offline_teacher.py`), loaded as `teacher.model=local-dir:` "
           "like any open_clip teacher. The data: Fashion-MNIST as an image folder, a fifth of the training images "
           f"held out for validation, the same test images in every run. The student: {gain['student']}. Test top-1 "
           "in %, mean ± std over the seeds; differences to the teacher-off baseline in points, paired per seed.", "",
           "### The teacher on the test images", "", res.source("kd_gain.json", "python benchmarks/kd_gain.py"), ""]
    keys = ("zero_shot_test_top1", "calibrated_test_top1", "linear_probe_test_top1")
    out += table(["training images per class", "test images", "zero-shot (prompts)", "calibrated anchors",
                  "linear probe"],
                 [[str(n), f"{t['test_images']:,}", *(pct(t[k], 1) + "%" for k in keys)] for n, t in probe.items()])
    return out + [""] + shipped_recipe(res, probe) + [""] + selection_rules(res)


CONFIRM = {"kd_gain_round3_confirm.json": "",
           "kd_gain_200_round3_confirm.json": " --per-class 200 --epochs 15"}


def shipped_recipe(res: Results, probe: dict[int, dict[str, Any]]) -> list[str]:
    """The shipped recipe against the baseline, final epoch, per regime (the confirm runs)."""
    w_vis, w_ling = shipped_weights()
    out, rows, views = ["### The shipped recipe against the baseline", ""], [], set()
    for name, args in CONFIRM.items():
        d = res.get(name)
        if d is None:
            continue
        arm, row = kd_arm(d)
        overrides = d["arms_overrides"][arm]
        out.append(res.source(name, f"python benchmarks/kd_ablation.py --round 3{args} --seeds {seeds(d['seeds'])} "
                                    f"--arm baseline --arm \"{arm}\" --out benchmarks/results/{name}"))
        gap = gap_closed(d["arms"][d["baseline"]]["test_top1"]["mean"], row["test_top1"]["mean"],
                         probe.get(d["per_class"], {}).get("linear_probe_test_top1"))
        shipped = (overrides.get("method.w_vis"), overrides.get("method.w_ling")) == (w_vis, w_ling)
        label = weights_label(overrides) + ("" if shipped else " (not the shipped weights)")
        views.add(overrides.get("teacher.cache_views"))
        rows.append([str(d["per_class"]), str(d["epochs"]), seeds(d["seeds"]), label,
                     mean_std(d["arms"][d["baseline"]]["test_top1"]), mean_std(row["test_top1"]),
                     bold(diff(row["diff_to_baseline"]), True), per_seed(row["diff_to_baseline"]), gap])
    shipped = weights_label({"method.w_vis": w_vis, "method.w_ling": w_ling})
    out += ["", f"`configs/imagefolder.yaml` as shipped (calibrated anchors, classifier KD, {shipped}), "
            f"{', '.join(str(v) for v in sorted(views - {None}))} cached views, each run's final epoch "
            "(`train.select=last`). \"Gap closed\": the gain as a share of the distance from the baseline to the "
            "teacher's linear probe above.", ""]
    return out + table(["images per class", "epochs", "seeds", "KD weights", "baseline", "shipped recipe",
                        "vs baseline", "per seed", "gap closed"], rows)


def gap_closed(base: float, kd: float, teacher: float | None) -> str:
    return f"{100 * (kd - base) / (teacher - base):.0f}%" if teacher and teacher > base else "–"


# kd_gain.json's third arm ("recommended") ran the KD weights the final ablation replaced: not shown.
ARM_LABELS = {"baseline": "baseline (teacher off)",
              "paper": "paper (`configs/cub.yaml`: prompt anchors, L1 visual term, linguistic term through M_txt)"}


def selection_rules(res: Results) -> list[str]:
    """kd_gain's three arms scored two ways: best validation epoch and final epoch (kd_gain_last_epoch)."""
    last = res.get("kd_gain_last_epoch.json")
    if last is None:
        return []
    out = ["### The paper's method, and which epoch to keep", "",
           res.source("kd_gain_last_epoch.json", "python benchmarks/kd_gain_last_epoch.py")]
    extra = {s for r in last["regimes"] for s in r["sources"]} - {"benchmarks/results/kd_gain.json"}
    for src in sorted(extra):
        name = Path(src).name
        if name in res.data:
            d = res.data[name]
            regimes = ",".join(str(r["per_class"]) for r in d["regimes"])
            epochs = ",".join(str(r["epochs"]) for r in d["regimes"])
            out.append(res.source(name, f"python benchmarks/kd_gain.py --regimes {regimes} --epochs {epochs} "
                                        f"--seeds {seeds(d['seeds'])} --out benchmarks/results/{name}"))
    out += ["", "VL2Lite as the paper writes it against the baseline, every run scored twice: at its best epoch by "
            "validation top-1 (`train.select=best_val`; the validation split holds a fifth of the training images) "
            "and at its final epoch (`train.select=last`).", ""]
    rows = []
    for r in last["regimes"]:
        for i, (arm, row) in enumerate((a, row) for a, row in r["arms"].items() if a in ARM_LABELS):
            b, e = row["best_val_epoch"], row["last_epoch"]
            gain = e.get("diff_to_baseline")
            rows.append([f"{r['per_class']} ({r['epochs']} epochs)" if i == 0 else "", ARM_LABELS[arm],
                         str(e["test_top1"]["n"]), mean_std(b["test_top1"]), diff(b.get("diff_to_baseline")),
                         mean_std(e["test_top1"]), diff(gain), per_seed(gain)])
    return out + table(["images per class", "arm", "seeds", "best-val epoch", "vs baseline", "final epoch",
                        "vs baseline", "per seed (final epoch)"], rows)


def section_ablation(res: Results) -> list[str] | None:
    d = res.get("kd_ablation_round3.json")
    if d is None:
        return None
    command = f"python benchmarks/kd_ablation.py --round 3 --seeds {seeds(d['seeds'])}"
    out = ["## How the recipe was chosen", "", res.source("kd_ablation_round3.json", command), "",
           f"The final ablation: the setup above with {d['per_class']} images per class and {d['epochs']} epochs, on "
           "seeds of its own, final epoch. The arm is chosen by the mean top-1 on a dev split "
           "(Fashion-MNIST training images that no run trains on); validation and test top-1 are shown for the "
           "record only. Every KD arm is the shipped recipe (calibrated anchors, classifier KD, "
           f"{views_of(d)} cached views) with the weights shown; the chosen arm is in bold.", ""]
    rows = []
    for arm, row in d["arms"].items():
        chosen, o = arm == d["chosen"], d["arms_overrides"][arm]
        label = "baseline (teacher off)" if arm == d["baseline"] else "KD, " + weights_label(o)
        gain = row.get("diff_to_baseline")
        rows.append([bold(label, chosen), bold(mean_std(row.get("dev_top1")), chosen), mean_std(row["val_top1"]),
                     mean_std(row["test_top1"]), diff(gain), per_seed(gain)])
    return out + table(["arm", "dev top-1", "val top-1", "test top-1", "vs baseline (test)", "per seed"], rows)


def views_of(d: dict[str, Any]) -> str:
    views = {str(o["teacher.cache_views"]) for o in d["arms_overrides"].values() if "teacher.cache_views" in o}
    return ", ".join(sorted(views))


def section_overhead(res: Results) -> list[str] | None:
    files = {"kd_overhead.json": "python benchmarks/kd_overhead.py",
             "kd_overhead_gpu.json": "bash benchmarks/gpu_check.sh"}
    if not any(res.get(f) for f in files):
        return None
    out = ["## What distillation costs", "",
           "Epoch time of (a) the teacher-off baseline, (b) KD with the teacher run on every step, (c) KD from the "
           "teacher cache, epochs interleaved a, b, c and the median of the rounds after the first; teachers with "
           "random weights (they cost what trained ones cost). \"Cache build\" includes building the teacher; "
           "\"views/s\" counts the embedding of the cached views alone."]
    for name, command in files.items():
        d = res.get(name)
        if d is None:
            continue
        out += ["", res.source(name, command), ""]
        rows = [[r["teacher"], f"{r['train_images']:,}", str(r["input_size"]), str(r["cache_views"]),
                 *(f"{r['epoch_s'][arm]:.2f}" for arm in ("baseline", "kd_online", "kd_cached")),
                 f"{r['ratio_online_vs_baseline']:.2f}×", f"**{r['ratio_cached_vs_baseline']:.2f}×**",
                 f"{r['cache_build_s']:.1f}", f"{r['cache_embed_views_per_s']:,.0f}"] for r in d["results"]]
        out += table(["teacher", "images", "px", "views", "(a) s/epoch", "(b) s/epoch", "(c) s/epoch", "b/a", "c/a",
                      "cache build s", "views/s"], rows)
    return out


# --- distillation from unlabeled images ----------------------------------------------------------


def section_pool(res: Results) -> list[str] | None:
    d = res.get("kd_pool.json")
    if d is None:
        return None
    students = ",".join(d["students"])
    epochs = d["pool_epochs"]
    pool_epochs = ",".join(f"{a}={e}" for a, e in epochs.items()) if isinstance(epochs, dict) else str(epochs)
    passes = ", ".join(f"{e} for {a}" for a, e in epochs.items()) if isinstance(epochs, dict) else str(epochs)
    t = d["teacher"]
    out = ["## Distillation from unlabeled images", "",
           res.source("kd_pool.json", f"python benchmarks/kd_pool.py --students {students} --seeds {seeds(d['seeds'])} "
                                      f"--epochs {d['epochs']} --pool-epochs {pool_epochs}"),
           "", f"Setup: {d['setup']}. Arms: `baseline` (teacher off), `kd` (the shipped recipe on the labeled images), "
           f"`kd+unlabeled` (the same plus the pool, `data.unlabeled`), `no-labels` (the pool alone, the teacher's "
           f"zero-shot as the target, `data.labels=none`). Labeled-only arms train {d['epochs']} epochs, pool arms "
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


def pool_cost(d: dict[str, Any]) -> list[str]:
    """Training images per second of a pool epoch against a labeled-only KD epoch, both from the cache."""
    lines = []
    for arch, summary in d["students"].items():
        arms = summary["arms"]
        if "kd" in arms and "kd+unlabeled" in arms:
            pool, labeled = arms["kd+unlabeled"]["images_per_s"], arms["kd"]["images_per_s"]
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
    command = "python benchmarks/kd_pool_recipe.py" + ("" if arch == "resnet18" else f" --arch {arch}") + (
        "" if variants == DEFAULT_VARIANTS else f' --variants "{variants}"')
    best = max(d["runs"], key=lambda r: r[d["chosen_on"]])
    out = [f"### Choosing the pool recipe: {arch}", "",
           res.source(name, command), "",
           f"Student {arch}, seed {d['seed']}, `kd+unlabeled`, one run per variant, chosen on the dev images "
           "(never on test); test top-1 for the record. The best on dev is in bold.", ""]
    rows = [[bold(" ".join([f"{r['pool_epochs']} pool epochs", *(f"`{k}={v}`" for k, v in r["overrides"].items())]),
                  r is best), bold(pct(r["dev_top1"]), r is best), pct(r["val_top1"]), pct(r["test_top1"])]
            for r in d["runs"]]
    return out + table(["variant", "dev top-1", "val top-1", "test top-1"], rows) + [""]


# --- students, export, INT8 ----------------------------------------------------------------------


def ms(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f} ms"


def ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def px(key: str) -> str:
    return key.replace("px", " px")


STUDENTS = {"students_imagenet.json": "--imagenet --students resnet18,timm:mobilenetv4_conv_small",
            "students_200.json": "--per-class 200 --students resnet18,timm:mobilenetv4_conv_small"}


def section_students(res: Results) -> list[str] | None:
    if not any(res.get(f) for f in STUDENTS):
        return None
    out = ["## Students: accuracy and INT8 latency", "",
           "Accuracy: the real-teacher setup above, the shipped recipe, final epoch, students from scratch unless "
           "marked ImageNet. Latency: SingleStream p50 at batch 1 (`runtime.bench`, onnxruntime on the CPU) of each "
           "student's seed-0 bundle at its training size, and of the same weights exported for a larger input "
           "(latency only); speed-ups against ResNet-18 INT8 in the same run. \"INT8 top-1\": the seed-0 INT8 model "
           "on the test images."]
    for name, args in STUDENTS.items():
        d = res.get(name)
        if d is None:
            continue
        out += ["", f"### {d['per_class']} training images per class, {d['epochs']} epochs", "",
                res.source(name, f"python benchmarks/students.py {args} --out benchmarks/results/{name}"), "",
                f"Setup: {d['setup']}; seeds {seeds(d['seeds'])}.", ""]
        out += students_table(d)
    return out


def students_table(d: dict[str, Any]) -> list[str]:
    sizes = [k for k in ("64px", "224px") if k in d]
    lat = {size: {r["student"]: r for r in d[size]} for size in sizes}
    ref = d["accuracy"].get("resnet18", {}).get("test_top1_mean")
    rows = []
    for arch, acc in d["accuracy"].items():
        init = "ImageNet" if arch in d.get("imagenet_initialised", []) else "scratch"
        vs = pts(acc["test_top1_mean"] - ref) if ref is not None and arch != "resnet18" else ""
        cells = [arch, init, f"{pct(acc['test_top1_mean'])} ± {pct(acc['test_top1_std'])}", vs,
                 pct(lat[sizes[0]][arch]["int8_top1_export"], 1)]
        for size in sizes:
            r = lat[size][arch]
            cells += [ms(r["fp32_p50_ms"]), ms(r["int8_p50_ms"]), ratio(r["int8_speedup_vs_resnet18_int8"])]
        rows.append(cells)
    header = ["student", "init", "test top-1", "vs ResNet-18", f"INT8 top-1 ({px(sizes[0])})"]
    header += [h for size in sizes for h in (f"FP32 {px(size)}", f"INT8 {px(size)}", "INT8 × ResNet-18")]
    return table(header, rows)


FORMATS = {"export_formats.json": "python benchmarks/export_formats.py",
           "export_formats_gpu_host.json": "bash benchmarks/gpu_check.sh"}


def section_formats(res: Results) -> list[str] | None:
    if not any(res.get(f) for f in FORMATS):
        return None
    out = ["## Export formats on a CPU", "",
           "PyTorch eager against onnxruntime FP32 and onnxruntime INT8 (`model.int8.onnx`, U8S8), one process, "
           "threads pinned to the machine's cores: median latency at batch 1 and 32 after warm-up. The student is "
           "trained by the script on the synthetic birds, an easy task: the top-1 column shows that no format lost "
           "accuracy, not what a real dataset gives."]
    for name, command in FORMATS.items():
        d = res.get(name)
        if d is None:
            continue
        lat, fp32 = d["latency"], d["latency"]["onnxruntime-fp32"]
        recipe = d["int8_recipe"]
        out += ["", res.source(name, command), "",
                f"{d['arch']} at {d['input_size']}×{d['input_size']}, trained {d['train_epochs']} epochs; top-1 on "
                f"{d['eval']['images']} test images; INT8: {recipe['method']}, {recipe['calibration_images']} "
                f"calibration images, {recipe['remedies_needed']} remedies; {d['threads']} threads.", ""]
        rows = [[fmt, pct(d["top1"][fmt]) + "%", ms(lat[fmt]["1"]["median_ms"]),
                 ratio(lat[fmt]["1"]["median_ms"] / fp32["1"]["median_ms"]), ms(lat[fmt]["32"]["median_ms"]),
                 ratio(lat[fmt]["32"]["median_ms"] / fp32["32"]["median_ms"])] for fmt in lat]
        out += table(["format", "top-1", "batch 1", "vs ORT FP32", "batch 32", "vs ORT FP32"], rows)
    return out


def section_int8_isa(res: Results) -> list[str] | None:
    d = res.get("int8_isa.json")
    if d is None:
        return None
    out = ["## INT8 on every x86 CPU: 7-bit weights", "",
           res.source("int8_isa.json", "python benchmarks/int8_isa.py --avx2 --qat"), "",
           f"Students trained from scratch (cross-entropy only, {d['epochs']} epochs, {d['per_class']} Fashion-MNIST "
           "images per class); one calibration quantized with 8-bit and with 7-bit CPU weights; onnxruntime's "
           "fused kernels; drop against FP32 in points with its paired 95% interval. \"AVX2\": the same graphs under "
           "QEMU presenting an AVX2-only CPU (`benchmarks/avx2_emulated.sh`), compared with this CPU. \"Worst pair "
           f"sum\": the largest int16 pair sum the weights allow (the limit is "
           f"{d['rows'][0]['accuracy']['7-bit']['saturation']['limit']:,}).", ""]
    rows = []
    for r in d["rows"]:
        acc, avx2 = r["accuracy"], r["avx2"]
        for i, bits in enumerate(("8-bit", "7-bit")):
            a, e = acc[bits], avx2[bits]
            rows.append([r["student"] if i == 0 else "", pct(acc["fp32_top1"]) + "%" if i == 0 else "", bits,
                         points(a), f"{a['agreement']:.4f}",
                         f"{a['saturation']['worst_pair_sum']:,}", f"{e['top1_agreement_with_this_cpu']:.3f}",
                         f"{e['max_abs_logit_diff']:.2f}", *(ms(r[k][f"{bits}_ms"]) for k in latency_keys(r))])
    out += table(["student", "FP32 top-1", "CPU weights", "INT8 drop (points, 95%)", "agreement", "worst pair sum",
                  "AVX2 vs this CPU: top-1 agreement", "max logit diff",
                  *(f"p50 {k[8:]} px" for k in latency_keys(d["rows"][0]))], rows)
    images = {r["accuracy"]["images"] for r in d["rows"]} | {r["avx2"]["images"] for r in d["rows"]}
    out += ["", f"Images: {', '.join(f'{n:,}' for n in sorted(images, reverse=True))} (accuracy on this CPU, AVX2). "
            "7-bit / 8-bit latency at batch 1 (median of per-round ratios): " +
            "; ".join(f"{r['student']} " + ", ".join(f"{r[k]['7bit_over_8bit']:.2f} ({k[8:]} px)"
                                                       for k in latency_keys(r)) for r in d["rows"]) + "."]
    return out + int8_isa_qat(d)


def latency_keys(row: dict[str, Any]) -> list[str]:
    return [k for k in row if k.startswith("latency_")]


def int8_isa_qat(d: dict[str, Any]) -> list[str]:
    rows = []
    for r in d["rows"]:
        q = r.get("qat") or {}
        for flavour in ("model.int8.onnx", "model.int8.trt.onnx"):
            if flavour not in q:
                continue
            f = q[flavour]
            p, t = f["ptq_vs_qat"]["ptq"], f["ptq_vs_qat"]["qat"]
            rows.append([r["student"], f"`{flavour}`", f"{f['fidelity']['agreement']:.3f}",
                         points(p), points(t)])
    if not rows:
        return []
    kernels = {r["qat"].get("torch_kernels") for r in d["rows"] if r.get("qat")}
    return ["", f"`python -m export.qat` with torch's {', '.join(sorted(kernels))} kernels: torch-vs-deployment "
            "fidelity and the top-1 drop on test, post-training against QAT:", ""] + \
        table(["student", "graph", "fidelity", "post-training drop", "QAT drop"], rows)


QAT = {"qat_test10k.json": "timm:mobilenetv3_small_100,timm:ghostnet_100,timm:repvit_m0_9,timm:fastvit_t8",
       "qat_test10k_b.json": "timm:convnext_atto,timm:efficientnet_lite0,timm:mobilenetv4_conv_small",
       "qat_test10k_select.json": "timm:mobilenetv3_small_100,timm:efficientnet_lite0,timm:fastvit_t8"}


def section_qat(res: Results) -> list[str] | None:
    present = [n for n in QAT if res.get(n)]
    if not present:
        return None
    out = ["## Post-training INT8 and quantization-aware training", ""]
    rows: dict[str, tuple[str, dict[str, Any]]] = {}
    for name in present:  # a later file's row replaces an earlier one of the same student
        out.append(res.source(name, f"python benchmarks/qat.py --students {QAT[name]} --out benchmarks/results/{name}"))
        rows.update({r["student"]: (name, r) for r in res.data[name]["rows"]})
    images = sorted({res.data[n].get("test_images") for n in present} - {None})
    student_seeds = ",".join(sorted({str(r["seed"]) for _, r in rows.values()}))
    out += ["", f"Students of the students benchmark above (seed {student_seeds}), each exported three ways and "
            f"scored against its own FP32 top-1 on {', '.join(f'{n:,}' for n in images)} test images: drop in points "
            "± its paired 95% interval / top-1 agreement with FP32. Post-training: one calibration, every node INT8; "
            "ladder: `--int8` as shipped (nodes kept in float in brackets); QAT: `python -m export.qat`, then "
            "`--int8 --qat`. U8S8 is the CPU graph, S8S8 the TensorRT graph scored by its Q/DQ reference semantics. "
            "These CPU graphs had 8-bit weights; the 7-bit graphs export writes now are compared with them above.", ""]
    body = []
    for student, (name, r) in rows.items():
        chosen = r["qat_record"]["selected_on"]
        for i, (key, flavour) in enumerate((("u8s8", "U8S8"), ("s8s8", "S8S8"))):
            ladder = r["ptq-ladder"][key]
            body.append([student if i == 0 else "", flavour, pct(r["ptq"]["fp32_top1"]) + "%" if i == 0 else "",
                         drop(r["ptq"][key]), f"{drop(ladder)} ({ladder['nodes_in_float']})", drop(r["qat"][key]),
                         f"{chosen['split']}, {chosen['images']} images" if i == 0 else "",
                         f"`{name}`" if i == 0 else ""])
    return out + table(["student", "graph", "FP32 top-1", "post-training", "ladder", "QAT", "QAT epoch chosen on",
                        "file"], body)


def drop(a: dict[str, Any]) -> str:
    return f"{points(a)} / {a['agreement']:.3f}"


# --- serving -------------------------------------------------------------------------------------


def section_serve(res: Results) -> list[str] | None:
    names = [n for n in ("serve_load_64.json", "serve_load_224.json") if res.get(n)]
    if not names:
        return None
    out, rows, notes = ["## Serving", ""], [], []
    for name in names:
        d = res.data[name]
        out.append(res.source(name, f"python benchmarks/serve_load.py {d['bundle']} --artifact "
                                    f"{d['in_process']['artifact']} --out benchmarks/results/{name}"))
        rows += serve_rows(d)
        cold = d["cold_start_s"]
        notes.append(f"- {input_size(d)}: cold start (process start to the first answer) {cold['median']:.2f} s, "
                     f"median of {len(cold['runs'])}; JPEG draft decoding: {d['jpeg_draft_parity']['reason']}")
    d = res.data[names[0]]
    requests = d["decodes"][0]["load"][0]["requests"]
    out += ["", f"The bundle's `{d['in_process']['artifact']}` behind `runtime.serve` (`--max-batch "
            f"{d['server']['max_batch']} --max-delay-ms {d['server']['max_delay_ms']:g}`), one {d['payload']} JPEG of "
            f"{d['payload_bytes']:,} bytes per request, {requests} requests per level from an asyncio client on the "
            f"same cores, levels interleaved over {d['rounds']} rounds, the median round. References in-process: the "
            "model alone (ready float32 batch) and the full pipeline (decode + preprocess + model, one decoding "
            "thread), best batch of each; images/s.", ""]
    out += table(["input", "decoding", "decode + preprocess", "model alone", "full pipeline", "concurrency",
                  "server", "× full pipeline", "p50 / p99 ms"], rows)
    return out + ["", *notes] + serve_memory(res)


def input_size(d: dict[str, Any]) -> str:
    return "×".join(map(str, d["input_size"]))


def serve_rows(d: dict[str, Any]) -> list[list[str]]:
    """One row per decoding and concurrency; the references only on each decoding's first row."""
    rows = []
    for dec in d["decodes"]:
        head = [input_size(d), dec["decode"], f"{dec['decode_preprocess_ms']:.2f} ms",
                f"{d['in_process']['best_fps']:,.0f}", f"{dec['pipeline']['best_fps']:,.0f}"]
        for i, load in enumerate(dec["load"]):
            rows.append([*(head if i == 0 else [""] * len(head)), str(load["concurrency"]),
                         f"{load['images_per_s']:,.0f}", ratio(load["ratio_to_pipeline"]),
                         f"{load['p50_ms']:.1f} / {load['p99_ms']:.1f}"])
    return rows


MODES = {"F": "float32 TIFF", "I": "int32 TIFF", "RGBA": "RGBA PNG", "RGB": "RGB PNG", "L": "grayscale PNG"}


def serve_memory(res: Results) -> list[str]:
    d = res.get("serve_memory.json")
    if d is None:
        return []
    decode = ", ".join(f"{MODES.get(k, k)} {v['bytes_per_pixel']:.2f}" for k, v in d["decode"].items())
    parse = ", ".join(f"`{k}` {v['expansion']:.1f}×" for k, v in d["json"].items())
    return ["", "### Memory per request", "", res.source("serve_memory.json", "python benchmarks/serve_memory.py"), "",
            f"Peak resident memory of one decode of a {d['megapixels']:g}-megapixel image through the runtime's decode "
            f"path, in bytes per pixel: {decode}. One {d['json_mb']:g} MB KServe JSON body through `json.loads`, "
            f"memory per byte of body: {parse}. `runtime.serve` prints its memory bound from these "
            "(docs/runtime.md)."]


# --- the page ------------------------------------------------------------------------------------

SECTIONS: list[Callable[[Results], list[str] | None]] = [
    section_kd_gain, section_ablation, section_overhead, section_pool, section_pool_recipe, section_students,
    section_formats, section_int8_isa, section_qat, section_serve]

HEADER = """# Measured results

Generated by `python benchmarks/results_page.py` from `benchmarks/results/*.json`; do not edit by
hand (`python benchmarks/results_page.py --check` tells whether this page is up to date). Each
table names the command that measured it, the JSON it wrote, the machine and the date (the date
the JSON records, else the day it was committed). Figures hold for the machine named: rerun the
script on yours before quoting them."""


def slug(title: str) -> str:
    """GitHub's anchor for a heading."""
    keep = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return keep.strip().replace(" ", "-")


def build(res: Results | None = None) -> tuple[str, set[str]]:
    """The page and the names of the JSON files it rendered."""
    res = res or Results.load()
    sections = [s for s in (fn(res) for fn in SECTIONS) if s]
    contents = [f"- [{s[0][3:]}](#{slug(s[0][3:])})" for s in sections]
    lines = [HEADER, "", *contents]
    for s in sections:
        lines += ["", *s]
    return "\n".join(lines) + "\n", res.used


def render() -> str:
    return build()[0]


def unaccounted(res: Results, used: set[str]) -> list[str]:
    """JSON files that are neither on the page nor listed as superseded."""
    return sorted(set(res.data) - used - set(SUPERSEDED))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/results.md is not up to date")
    args = parser.parse_args(argv)
    res = Results.load()
    page, used = build(res)
    missing = unaccounted(res, used)
    if missing:
        print(f"error: benchmarks/results has JSON files the page does not render and SUPERSEDED does not list: "
              f"{', '.join(missing)}; add a renderer to benchmarks/results_page.py or list them there", file=sys.stderr)
        return 1
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != page:
            print(f"error: {PAGE.relative_to(REPO)} is not what benchmarks/results/*.json give; run "
                  "python benchmarks/results_page.py and commit the page", file=sys.stderr)
            return 1
        print(f"{PAGE.relative_to(REPO)} is up to date ({len(used)} result files)")
        return 0
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(REPO)} from {len(used)} result files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
