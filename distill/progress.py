"""What a training run prints: the progress bar during an epoch and the lines around it.

The teacher's diagnostics before epoch 1, one line per epoch, the student's figures at the end
(all only with ``train.progress``; teacher warnings always go to stderr).
"""
from __future__ import annotations

import sys
from typing import Iterator

import torch
from torch.utils.data import DataLoader

from distill.config import Config
from distill.run_state import Run


def progress(loader: DataLoader, run: Run, epoch: int) -> Iterator:
    if not run.cfg.train.progress or not run.ctx.is_main:
        return iter(loader)
    from tqdm import tqdm
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{run.cfg.train.epochs}", leave=False, dynamic_ncols=True)
    loader._bar = bar  # type: ignore[attr-defined]
    return iter(bar)


def postfix(loader: DataLoader, loss: torch.Tensor, rate: float) -> None:
    bar = getattr(loader, "_bar", None)
    if bar is not None:
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}", img_s=f"{rate:.1f}")


def report_teacher(cfg: Config, diag: dict | None) -> None:
    if diag is None:
        return
    if cfg.train.progress:
        print(f"teacher on validation ({diag['val_images']} images, chance {100 * diag['chance']:.1f}%): "
              f"zero-shot {100 * diag['zero_shot_val_top1']:.1f}%, with the {diag['anchors']} anchors the "
              f"linguistic term uses {100 * diag['calibrated_val_top1']:.1f}%, linear probe "
              f"{100 * diag['linear_probe_val_top1']:.1f}% ({diag['calibration_reason']})", flush=True)
    for warning in diag["warnings"]:  # shown even without progress output
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def report_student(cfg: Config, metrics: dict, diag: dict | None) -> None:
    if not cfg.train.progress:
        return
    line = f"student: val top-1 {100 * metrics['val']['top1']:.2f}%, test top-1 {100 * metrics['test']['top1']:.2f}%"
    if "teacher_zero_shot_top1" in metrics["test"]:  # data.labels=none: the teacher's zero-shot is the bar
        t = metrics["test"]
        line += (f" (the teacher's zero-shot on the same test images {100 * t['teacher_zero_shot_top1']:.2f}%, "
                 f"the student agrees with it on {100 * t['agreement_with_teacher']:.1f}%")
        if "teacher_balanced_zero_shot_top1" in t:
            line += (f"; with its class prior balanced over the unlabeled images, the target distilled, "
                     f"{100 * t['teacher_balanced_zero_shot_top1']:.2f}%")
        line += ")"
    elif diag is not None:
        line += (f" (teacher on val: zero-shot {100 * diag['zero_shot_val_top1']:.1f}%, "
                 f"linear probe {100 * diag['linear_probe_val_top1']:.1f}%)")
    print(line, flush=True)


def report_epoch(cfg: Config, r: dict) -> None:
    if not cfg.train.progress:
        return
    terms = " ".join(f"{k[6:]} {v:.4f}" for k, v in r.items() if k.startswith("train_") and k != "train_loss")
    print(f"epoch {r['epoch']}/{cfg.train.epochs}: loss {r['train_loss']:.4f} ({terms}, "
          f"w_cls {r['w_cls']:.3f}) val top-1 {100 * r['val_top1']:.2f}%"
          f"{' *' if r['best'] else ''} [{r['images_per_s']:.0f} img/s]", flush=True)
