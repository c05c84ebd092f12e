"""A training run's state (``Run``) and the files that persist it.

``best.pt`` holds the student artifact, ``last.pt`` the artifact plus the training state that
``restore`` resumes from (optimizer, scheduler, epoch, RNG); ``results.json`` and
``metrics.jsonl`` are the run's figures. Only rank 0 writes them; ``distill.train`` decides when.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.checkpoint import student_artifact
from distill.config import Config
from distill.config_parse import to_dict
from distill.data import DatasetSplits, TrainViews, dataset_spec
from distill.dist import DistContext
from distill.heads import Condensation
from distill.pool import Pool
from distill.targets import Targets
from formats.errors import UserError
from formats.files import write_text
from formats.records import from_dict
from formats.run_results import PoolSummary, RunResults, StudentMetrics, TeacherDiagnostics, student_metrics
from students.checkpoint import read_checkpoint
from students.registry import Student


@dataclass
class Run:
    """Everything one training run holds (built by ``setup``)."""

    cfg: Config
    dir: Path
    device: torch.device
    ctx: DistContext
    splits: DatasetSplits
    student: Student
    heads: Condensation | None
    model: nn.Module  # Trainable, DDP-wrapped under torchrun
    targets: Targets | None  # None: the CE-only baseline
    num_views: int  # 0: a fresh view every epoch (online teacher); K: one of the K cached views
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    train_set: TrainViews
    preprocessing: dict
    teacher_diagnostics: dict | None = None  # distill.calibrate.diagnostics; None: the baseline
    start_epoch: int = 0
    best_val: float = -1.0
    pool: Pool | None = None  # the unlabeled pool (data.unlabeled) after the leakage check
    pool_set: TrainViews | None = None
    pool_targets: Targets | None = None
    pool_views: int = 0  # as num_views, for the pool's cached views
    pool_student_logits: torch.Tensor | None = None  # (N_pool, C) an earlier student's (method.pool_student)


def results(run: Run, best: dict | None) -> RunResults:
    """results.json: the teacher's diagnostics (before epoch 1), then the student beside them."""
    teacher = (None if run.teacher_diagnostics is None else
               from_dict(TeacherDiagnostics, run.teacher_diagnostics, "the teacher's diagnostics"))
    pool = None if run.pool is None else PoolSummary(len(run.pool.source), run.pool.listed, run.pool.dropped,
                                                    run.cfg.data.labels)
    metrics = StudentMetrics() if best is None else student_metrics(best["metrics"], "best.pt")
    return RunResults(teacher, pool, None if best is None else best["epoch"], metrics.val, metrics.test)


def artifact(run: Run, metrics: dict, epoch: int) -> dict[str, Any]:
    return student_artifact(run.student, run.cfg.student.arch, run.splits.class_names, run.preprocessing,
                            asdict(dataset_spec(run.cfg.data)), to_dict(run.cfg), metrics, epoch)


def resume_state(run: Run, metrics: dict, epoch: int) -> dict[str, Any]:
    state = artifact(run, metrics, epoch)
    state["train_state"] = {
        "epoch": epoch, "best_val": run.best_val,
        "heads": run.heads.state_dict() if run.heads else None,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler else None,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore(run: Run, path: Path) -> None:
    """Continue exactly where ``last.pt`` stopped: weights, optimizer, scheduler, epoch, RNG."""
    ckpt, _ = read_checkpoint(path)
    state = ckpt.get("train_state")
    if state is None:
        raise UserError(f"{path} has no training state to resume from (is it a best.pt?)")
    if (state["heads"] is None) != (run.heads is None):
        raise UserError(f"{path} was trained with teacher.enabled={state['heads'] is not None}: "
                        f"resume with the same setting")
    run.student.load_state_dict(ckpt["state_dict"])
    if run.heads is not None:
        run.heads.load_state_dict(state["heads"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scheduler is not None and state["scheduler"] is not None:
        run.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    run.start_epoch, run.best_val = state["epoch"], state["best_val"]
    if run.ctx.is_main:
        _truncate_jsonl(run.dir / "metrics.jsonl", run.start_epoch)


def _truncate_jsonl(path: Path, last_epoch: int) -> None:
    """Drop records of epochs after ``last_epoch`` (written just before an interruption), and a line
    torn by a kill mid-write (said on stderr): the resumed run rewrites both."""
    if not path.exists():
        return
    keep, torn = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            torn += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int) and record["epoch"] <= last_epoch:
            keep.append(line)
    if torn:
        print(f"warning: {path} had {torn} torn line(s) (a kill mid-write); dropped, the resumed run "
              f"writes those epochs again", file=sys.stderr)
    write_text(path, "".join(ln + "\n" for ln in keep))


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
