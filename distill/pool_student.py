"""Self-training, round 2 (``method.pool_student``): an earlier student teaches on the pool beside the teacher.

A student trained with the pool (round 1) is right on images where the teacher is wrong and the other way
round: on the kd_pool benchmark a round-1 ResNet-18 and the calibrated teacher each score about 80% on the
dev images, their averaged prediction 81%. Round 2 trains a fresh student whose class target on each
unlabeled image is that mixture, (1 − α) · teacher + α · round-1 student (``losses.with_second_teacher``),
as Noisy Student (Xie et al., CVPR 2020) trains each generation on the previous one's soft labels. The
round-1 student's logits are computed once, before epoch 1, on each pool image's eval view (its own
preprocessing): it sees the whole image where the teacher saw one cached view of it.

Measured there, the better target did not make a better student (docs/training.md: 78.4% dev against
round 1's 78.8%); the option stays for a second teacher much stronger than the student.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from distill.config import Config
from distill.evaluate import predicted_logits
from distill.pool import Pool
from formats.errors import UserError
from students.checkpoint import load_student


def pool_student_logits(cfg: Config, class_names: list[str], pool: Pool, device: torch.device,
                        verbose: bool = True) -> torch.Tensor | None:
    """(N_pool, C) the logits of the ``method.pool_student`` checkpoint on every pool image, on ``device``;
    None without one."""
    if not cfg.method.pool_student:
        return None
    problem = missing_pool_student(cfg)
    if problem:
        raise UserError(problem)
    path = Path(cfg.method.pool_student)
    student, meta = load_student(path)
    if list(meta.class_names) != list(class_names):
        raise UserError(f"method.pool_student {path} was trained on other classes ({_names(meta.class_names)}) than "
                        f"this run's ({_names(class_names)}): pass a student of this task")
    start = time.perf_counter()
    logits = predicted_logits(student.to(device), pool.source, meta.preprocessing.to_dict(), device,
                              cfg.data.eval_batch_size, cfg.data.workers, cfg.train.amp)  # (N_pool, C)
    if verbose:
        print(f"pool student: {path} ({meta.arch}) predicted the {len(logits)} unlabeled images in "
              f"{time.perf_counter() - start:.0f} s; its share of their class target: "
              f"{cfg.method.pool_student_weight:g}", file=sys.stderr, flush=True)
    return logits.to(device)


def missing_pool_student(cfg: Config) -> str | None:
    """What is wrong when ``method.pool_student`` names no file (``distill.preflight`` lists it before any work)."""
    path = cfg.method.pool_student
    if not path or Path(path).is_file():
        return None
    return (f"method.pool_student {path} does not exist: pass the best.pt of a run of this task with data.unlabeled "
            f"(round 1), or drop method.pool_student")


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:5])
    return f"{len(names)}: {shown}, ..." if len(names) > 5 else f"{len(names)}: {shown}"
