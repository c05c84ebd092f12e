"""Many students from one teacher cache: train each, export each, benchmark all, pick one for a budget.

    python -m pipeline sweep --config X student.arch=resnet18,timm:mobilenetv4_conv_small [--budget-ms 2]

The teacher cache does not depend on the student, so it is built once (or reused: the folder a plain
run or ``distill compare`` of the same setup built, ``distill.cache_ready``) and every student reads it.
Before any work, every file any student needs is checked (``distill.preflight``); while it runs, a
line per student per stage (training, export, QAT) and one for the benchmark.
Each student trains into ``<out_dir>/<name>/<student>/`` (a finished run of the same setup is
reused, as in ``distill compare``), is exported into ``<out_dir>/<name>/bundles/<student>/``
(default ``--int8 --best-effort``: an INT8 miss keeps the FP32 bundle, marked) and all bundles are
measured together on this machine, which writes the frontier table and plot and names the most
accurate student within ``--budget-ms``. With ``--qat``, a student whose post-training INT8 misses
the budget gets quantization-aware training (into ``<run>/qat``) and is exported again with those
graphs into ``bundles/<student>-qat/``, the bundle the benchmark then measures. ``sweep.json``
(``formats.sweep.Sweep``) holds every student's training, export and bench figures.

Every stage is called in this process, as a library function: training (``distill.compare``),
export and QAT (``export``), the benchmark (``runtime.bench``). That is safe because
- a stage's failure is an exception: one student's failed export or QAT is a row that says why
  (``pipeline.stages.attempt``), told apart by the exception's type (an INT8 miss is export's
  ``BudgetError``), and the other students go on;
- the timings are isolated anyway: runtime's benchmark measures each (artifact, backend) in a fresh
  interpreter of its own (``runtime.bench_worker``), so the torch thread pool, memory and allocator
  state that training left in this process cannot colour a latency or a peak-memory figure, and
  this process only waits while they run. A subprocess around the whole benchmark would add a
  second interpreter start and nothing else; the record keeps the equivalent ``python -m
  runtime.bench`` line, the very command a device runs on copied bundles.
What is not called in-process: the benchmark's measurements themselves (runtime's own workers,
above), and a distributed training run (torchrun starts its own processes; the sweep trains on one).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from typing import Callable

from distill.cache_ready import prepare_cache
from distill.compare import train_or_reuse
from distill.config import Config, with_overrides
from distill.preflight import preflight
from formats.errors import UserError
from formats.progress import Step, duration, stage
from formats.sweep import StageRun, StudentRow, Sweep, new_sweep
from pipeline.settings import SweepSettings
from pipeline.stages import bench_bundles, export_student, train_qat


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


def sweep(cfg: Config, students: list[str], settings: SweepSettings = SweepSettings()) -> Sweep:
    """Train, export and (unless ``bench`` is off) benchmark every student; writes and returns sweep.json."""
    inputs = preflight(cfg, students)  # every name and every file any student needs, before the first minute
    root = Path(cfg.train.out_dir) / cfg.train.name
    cfg, ready = prepare_cache(cfg, inputs)  # the same folder a plain run or compare of this setup uses
    summary = new_sweep((), ready.seconds if ready is not None and ready.built else 0.0)
    start = time.perf_counter()
    with stage("sweep", total=len(students), unit="student") as step:
        for arch in students:
            row = student_row(cfg, root, arch, settings, step)
            summary = dataclasses.replace(summary, students=(*summary.students, row))
            summary.write(root / "sweep.json")  # progress survives a kill
            step.advance()
    summary = dataclasses.replace(summary, train_export_s=time.perf_counter() - start)
    bundles = [Path(r.export.output) for r in summary.students if r.export.output is not None]
    if settings.bench and bundles:
        with stage(f"sweep: benchmark of {len(bundles)} bundle(s)"):
            bench = bench_bundles(bundles, root / "bench", settings.bench_settings, settings.bench_args)
        summary = dataclasses.replace(summary, bench=bench)
    summary = dataclasses.replace(summary, wall_s=time.perf_counter() - start)
    summary.write(root / "sweep.json")
    return summary


def student_row(cfg: Config, root: Path, arch: str, settings: SweepSettings, step: Step) -> StudentRow:
    """Train (or reuse) one student and export it; with ``--qat``, retrain a missed INT8 and export again.
    A line per stage on ``step``."""
    run_cfg = with_overrides(cfg, {"student.arch": arch, "train.out_dir": str(root), "train.name": folder_name(arch)})
    step.note(f"{arch}: training")
    record = train_or_reuse(run_cfg, arch, run_cfg.train.seed)
    step.note(f"{arch}: trained, test top-1 {100 * record.test_top1:.2f}% ({duration(record.wall_s)})")
    checkpoint, bundle = Path(record.run) / "best.pt", root / "bundles" / folder_name(arch)
    export = _noted(step, arch, "export", lambda: export_student(checkpoint, bundle, settings.export_options,
                                                                 settings.export_args))
    row = StudentRow(arch, record.run, record.test_top1, record.wall_s, export)
    if not (settings.qat and int8_missed(export)):
        return row
    qat = _noted(step, arch, "quantization-aware training",
                 lambda: train_qat(checkpoint, settings.qat_settings, settings.qat_args))
    if not qat.ok:
        return dataclasses.replace(row, export_ptq=export, qat=qat)
    options = dataclasses.replace(settings.export_options, qat=qat.output)
    again = _noted(step, arch, "export with the QAT graphs", lambda: export_student(
        checkpoint, bundle.with_name(f"{bundle.name}-qat"), options, f"{settings.export_args} --qat {qat.output}"))
    return dataclasses.replace(row, export=again, export_ptq=export, qat=qat)


def _noted(step: Step, arch: str, what: str, work: Callable[[], StageRun]) -> StageRun:
    """``work()``, with a line on ``step`` when it starts and one when it ends (reused, done, or why not)."""
    step.note(f"{arch}: {what}")
    done = work()
    how = ("reused" if done.reused else f"done in {duration(done.seconds)}") if done.failure is None else (
        f"failed: {done.failure.reason}")
    step.note(f"{arch}: {what} {how}")
    return done


def int8_missed(export: StageRun) -> bool:
    """Post-training INT8 missed the accuracy budget: (``--best-effort``) the bundle keeps an INT8
    artifact marked over it, or the export stopped with export's ``BudgetError``. ``--qat`` needs
    ``--int8``, and the error does not say which precision missed: it is taken as INT8's (FP32 ONNX
    is parity-checked against PyTorch; if FP16 missed instead, the second export misses again and
    its row says so)."""
    if export.failure is not None:
        return export.failure.error == "BudgetError"
    return any(a.precision == "int8" and a.within_budget is False for a in export.artifacts)


def format_sweep(summary: Sweep) -> str:
    lines = [f"{'student':<32} {'test top-1':>10} {'train s':>8}  export"]
    for r in summary.students:
        lines.append(f"{r.student:<32} {100 * r.test_top1:>9.2f}% {r.train_s:>8.0f}  {_export_note(r)}")
    bench = summary.bench
    if bench is not None:
        lines.append(f"benchmark: {bench.result if bench.failure is None else 'failed: ' + bench.failure.reason}")
        lines.append(f"  the same on a device: {bench.command}")
        if bench.pick is not None:
            lines.append(bench.pick.message)
    return "\n".join(lines)


def _export_note(r: StudentRow) -> str:
    e = r.export
    if e.failure is None:
        note = "ok: " + ", ".join(f"{a.file.removeprefix('model.')} {100 * a.top1:.2f}%"
                                  + (" (over budget)" if a.within_budget is False else "")
                                  for a in e.artifacts if a.top1 is not None)
    else:
        note = f"failed (exit {e.failure.exit}): {e.failure.reason}"
    if r.qat is not None:
        note += " [INT8 quantization-aware trained]" if r.qat.ok else f" [QAT failed: {r.qat.failure.reason}]"
    return note
