"""Many students from one teacher cache: train each, export each, benchmark all, pick one for a budget.

    python -m distill sweep --config X student.arch=resnet18,timm:mobilenetv4_conv_small [--budget-ms 2]

The teacher cache does not depend on the student, so it is built once and every student reads it.
Each student trains into ``<out_dir>/<name>/<student>/`` (a finished run of the same setup is
reused, as in ``distill compare``), is exported into ``<out_dir>/<name>/bundles/<student>/`` with
``python -m export`` (default ``--int8 --best-effort``: an INT8 miss keeps the FP32 bundle, marked)
and all bundles are measured together on this machine with ``python -m runtime.bench``, which
writes the frontier table and plot and names the most accurate student within ``--budget-ms``.
Export and benchmark run as their own commands (subprocesses): one student's failed export is a
row that says why and the others go on, and the benchmark half is the very command a device
runs on copied bundles. With ``--qat``, a student whose post-training INT8 misses the budget gets
``python -m export.qat`` (into ``<run>/qat``) and is exported again with ``--qat`` into
``bundles/<student>-qat/``, the bundle the benchmark then measures. ``sweep.json`` holds every student's training, export and bench figures.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.compare import ensure_cache, train_or_reuse
from distill.config import Config, with_overrides
from formats.errors import UserError
from formats.files import sha256_file, write_json
from students.registry import check_arch


@dataclass(frozen=True)
class SweepSettings:
    budget_ms: float | None = None  # latency budget (SingleStream p50, batch 1, this machine): names the best student
    export_args: str = "--int8 --best-effort"  # options for python -m export, as one string
    bench_args: str = "--batch 1,8"  # options for python -m runtime.bench, as one string
    bench: bool = True  # benchmark the bundles here (--no-bench: train and export only, bench on the device)
    qat: bool = False  # a student whose INT8 misses the budget: python -m export.qat, then export again with --qat
    qat_args: str = ""  # options for python -m export.qat, as one string

    def __post_init__(self) -> None:
        if self.budget_ms is not None and self.budget_ms <= 0:
            raise UserError(f"--budget-ms must be > 0 milliseconds, got {self.budget_ms}")
        if self.qat and "--int8" not in shlex.split(self.export_args):
            raise UserError("--qat retrains INT8 graphs that missed the budget: --export-args must include --int8")


def split_students(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(students, other overrides) from ``student.arch=a,b,c`` among the overrides."""
    students, rest = [], []
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip() == "student.arch":
            students += [s.strip() for s in value.split(",") if s.strip()]
        else:
            rest.append(item)
    if not students:
        raise UserError("name the students to sweep: student.arch=resnet18,timm:mobilenetv4_conv_small,...")
    if len(set(students)) != len(students):
        raise UserError(f"student.arch={','.join(students)} names a student twice: name each once")
    return students, rest


def folder_name(arch: str) -> str:
    return arch.replace(":", "-").replace("/", "-")


def sweep(cfg: Config, students: list[str], settings: SweepSettings = SweepSettings()) -> dict[str, Any]:
    """Train, export and (unless ``bench`` is off) benchmark every student; writes and returns sweep.json."""
    for arch in students:
        check_arch(arch)  # every name checked before the first minute of training
    root = Path(cfg.train.out_dir) / cfg.train.name
    if cfg.teacher.enabled:
        cfg = with_overrides(cfg, {"teacher.cache": cfg.teacher.cache or str(root / "teacher-cache")})
    cache_s = ensure_cache(cfg) if cfg.teacher.enabled else 0.0
    start, rows = time.perf_counter(), []
    for arch in students:
        run_cfg = with_overrides(cfg, {"student.arch": arch, "train.out_dir": str(root),
                                       "train.name": folder_name(arch)})
        record = train_or_reuse(run_cfg, arch, run_cfg.train.seed)
        checkpoint, bundle = Path(record["run"]) / "best.pt", root / "bundles" / folder_name(arch)
        row = {"student": arch, "run": record["run"], "test_top1": record["test_top1"], "train_s": record["wall_s"],
               "export": export_student(checkpoint, bundle, settings.export_args)}
        if settings.qat and int8_missed(row["export"]):
            row["export_ptq"], row["qat"] = row["export"], train_qat(checkpoint, settings.qat_args)
            if row["qat"]["status"] == "ok":
                row["export"] = export_student(checkpoint, bundle.with_name(f"{bundle.name}-qat"),
                                               f"{settings.export_args} --qat {row['qat']['folder']}")
        rows.append(row)
        write_json(root / "sweep.json", {"students": rows, "cache_build_s": cache_s})  # progress survives a kill
    summary: dict[str, Any] = {"students": rows, "cache_build_s": cache_s, "train_export_s": time.perf_counter() - start}
    bundles = [r["export"]["bundle"] for r in rows if r["export"]["status"] == "ok"]
    if settings.bench and bundles:
        summary["bench"] = bench_bundles(bundles, root / "bench", settings)
    summary["wall_s"] = time.perf_counter() - start
    write_json(root / "sweep.json", summary)
    return summary


def export_student(checkpoint: Path, bundle: Path, export_args: str) -> dict[str, Any]:
    """``python -m export`` for one student; a bundle of this very checkpoint and these export
    options (recorded beside it, in ``<bundle>.sweep.json``) is reused."""
    manifest, record = bundle / "manifest.json", bundle.with_name(f"{bundle.name}.sweep.json")
    made_by = {"checkpoint_sha256": sha256_file(checkpoint), "export_args": export_args}
    if _made_from(record, made_by) and manifest.is_file():
        return _export_record(bundle, json.loads(manifest.read_text()), 0.0, reused=True)
    failed, seconds = _run("export", checkpoint, bundle, export_args, record, made_by)
    return failed or _export_record(bundle, json.loads(manifest.read_text()), seconds, reused=False)


def int8_missed(export: dict[str, Any]) -> bool:
    """Post-training INT8 missed the budget: the export failed for it (exit 3) or kept it marked."""
    if export["status"] != "ok":
        return export["exit"] == 3 and "INT8" in export["reason"]
    return any(a["precision"] == "int8" and a["within_budget"] is False for a in export["artifacts"].values())


def train_qat(checkpoint: Path, qat_args: str) -> dict[str, Any]:
    """``python -m export.qat`` into ``<run>/qat`` (a folder of this very checkpoint and these options,
    recorded in ``<run>/qat.sweep.json``, is reused); a failure is recorded, not raised."""
    folder, record = checkpoint.parent / "qat", checkpoint.parent / "qat.sweep.json"
    made_by = {"checkpoint_sha256": sha256_file(checkpoint), "qat_args": qat_args}
    if _made_from(record, made_by) and (folder / "qat.json").is_file():
        return {"status": "ok", "folder": str(folder), "qat_s": 0.0, "reused": True}
    failed, seconds = _run("export.qat", checkpoint, folder, qat_args, record, made_by)
    return failed or {"status": "ok", "folder": str(folder), "qat_s": seconds, "reused": False}


def _made_from(record: Path, made_by: dict[str, Any]) -> bool:
    """Whether ``record`` says the output beside it came from exactly ``made_by`` (none or a torn one: no)."""
    try:
        return json.loads(record.read_text()) == made_by
    except (OSError, ValueError):
        return False


def _run(module: str, checkpoint: Path, out: Path, args: str, record: Path,
         made_by: dict[str, Any]) -> tuple[dict[str, Any] | None, float]:
    """``python -m <module> <checkpoint> --out <out> --overwrite <args>``: (its failure row or None, seconds);
    on success ``record`` says what made ``out``."""
    cmd = [sys.executable, "-m", module, str(checkpoint), "--out", str(out), "--overwrite", *shlex.split(args)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return _failed(done, cmd), 0.0
    write_json(record, made_by)
    return None, time.perf_counter() - start


def _failed(done: subprocess.CompletedProcess, cmd: list[str]) -> dict[str, Any]:
    """A failed command's row: its exit status and its ``error:`` line (else its last line)."""
    lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
    reason = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "")
    return {"status": "failed", "exit": done.returncode, "reason": reason[:500], "command": shlex.join(cmd)}


def _export_record(bundle: Path, manifest: dict[str, Any], seconds: float, reused: bool) -> dict[str, Any]:
    arts = {a["file"]: {"precision": a["precision"], "top1": a.get("top1"),
                        "within_budget": a.get("budget", {}).get("within_budget")} for a in manifest["artifacts"]}
    return {"status": "ok", "bundle": str(bundle), "export_s": seconds, "reused": reused, "artifacts": arts}


def bench_bundles(bundles: list[str], out: Path, settings: SweepSettings) -> dict[str, Any]:
    """``python -m runtime.bench`` on every bundle at once: the frontier and the pick (its output streams)."""
    cmd = [sys.executable, "-m", "runtime.bench", *bundles, "--out", str(out), *shlex.split(settings.bench_args)]
    if settings.budget_ms is not None:
        cmd += ["--budget-ms", str(settings.budget_ms)]
    if len(bundles) == 1:  # one bundle writes bench.json, several write frontier.json
        out = out / Path(bundles[0]).name
        cmd[cmd.index("--out") + 1] = str(out)
    done = subprocess.run(cmd)
    if done.returncode != 0:
        return {"status": "failed", "exit": done.returncode, "command": shlex.join(cmd)}
    result = out / ("frontier.json" if len(bundles) > 1 else "bench.json")
    return {"status": "ok", "command": shlex.join(cmd), "result": str(result),
            "budget": json.loads(result.read_text()).get("budget")}


def format_sweep(summary: dict[str, Any]) -> str:
    lines = [f"{'student':<32} {'test top-1':>10} {'train s':>8}  export"]
    for r in summary["students"]:
        e = r["export"]
        if e["status"] == "ok":
            arts = ", ".join(f"{file.removeprefix('model.')} {100 * a['top1']:.2f}%"
                             + (" (over budget)" if a["within_budget"] is False else "")
                             for file, a in e["artifacts"].items() if a["top1"] is not None)
            note = f"ok: {arts}"
        else:
            note = f"failed (exit {e['exit']}): {e['reason']}"
        if "qat" in r:
            q = r["qat"]
            note += " [INT8 quantization-aware trained]" if q["status"] == "ok" else f" [QAT failed: {q['reason']}]"
        lines.append(f"{r['student']:<32} {100 * r['test_top1']:>9.2f}% {r['train_s']:>8.0f}  {note}")
    bench = summary.get("bench")
    if bench:
        lines.append(f"benchmark: {bench['result'] if bench['status'] == 'ok' else 'failed: ' + bench['command']}")
        if bench.get("budget"):
            lines.append(bench["budget"]["message"])
    return "\n".join(lines)

