"""Evaluating a student: top-1 / top-5 accuracy and mean CE on an image source (eval transform).

Also the bf16 autocast that training steps and evaluation share (CUDA only).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Subset

from distill.data import EvalImages
from distill.dist import DistContext, all_reduce_sum
from students.registry import Student


def autocast(device: torch.device, enabled: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


@torch.no_grad()
def evaluate(student: Student, source, preprocessing: dict, device: torch.device, batch_size: int,
             workers: int, amp: bool = True, ctx: DistContext = DistContext()) -> dict[str, float]:
    """Top-1 / top-5 accuracy and mean CE of ``student`` on an image source (eval transform).

    Under torchrun each rank takes every world-th image (no padding), and the counts are summed.
    """
    student.eval()
    dataset = EvalImages(source, preprocessing)
    if ctx.enabled:
        dataset = Subset(dataset, range(ctx.rank, len(dataset), ctx.world))
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    correct1 = correct5 = loss_sum = n = 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with autocast(device, amp):
            logits = student(x).float()  # (B, C)
        loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, k)
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(dim=1).sum())
        n += len(y)
    correct1, correct5, loss_sum, n = all_reduce_sum([correct1, correct5, loss_sum, n], ctx, device)
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss_sum / n, "images": int(n)}


@torch.no_grad()
def predicted_logits(student: Student, source, preprocessing: dict, device: torch.device, batch_size: int,
                     workers: int, amp: bool = True) -> torch.Tensor:
    """(N, C) float32 the student's logits on every image of ``source`` (eval transform), in order, on the CPU
    (this process only)."""
    student.eval()
    loader = DataLoader(EvalImages(source, preprocessing), batch_size=batch_size, num_workers=workers, shuffle=False)
    out = []
    for x, _ in loader:
        with autocast(device, amp):
            out.append(student(x.to(device)).float().cpu())  # (B, C)
    return torch.cat(out) if out else torch.zeros(0, student.classifier.out_features)


def predicted_classes(student: Student, source, preprocessing: dict, device: torch.device, batch_size: int,
                      workers: int, amp: bool = True) -> torch.Tensor:
    """(N,) the student's top-1 class of every image of ``source``, in order (this process only)."""
    return predicted_logits(student, source, preprocessing, device, batch_size, workers, amp).argmax(dim=1)


def beside_zero_shot(cfg, splits, student: Student, preprocessing: dict, device: torch.device,
                     bias: torch.Tensor | None = None) -> dict[str, float]:
    """Without labels the teacher's zero-shot is the bar: its top-1 on the same test images, and how often the
    student's class agrees with it; with ``bias`` (the prior balanced over the pool) also the teacher the
    student distilled, its top-1 and the agreement with it."""
    from distill.targets import zero_shot_predictions

    d, test = cfg.data, splits.test
    teacher = zero_shot_predictions(cfg, splits, test, device)  # (N,)
    mine = predicted_classes(student, test, preprocessing, device, d.eval_batch_size, d.workers, cfg.train.amp)
    y = torch.tensor(test.labels)  # (N,)
    out = {"teacher_zero_shot_top1": float(teacher.eq(y).float().mean()),
           "agreement_with_teacher": float(mine.eq(teacher).float().mean())}
    if bias is not None:
        balanced = zero_shot_predictions(cfg, splits, test, device, bias)  # (N,)
        out.update(teacher_balanced_zero_shot_top1=float(balanced.eq(y).float().mean()),
                   agreement_with_balanced_teacher=float(mine.eq(balanced).float().mean()))
    return out
