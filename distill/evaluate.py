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
