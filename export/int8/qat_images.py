"""The training images of quantization-aware training: decoded once, reshuffled, flipped and shifted."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from export.evaluation import CACHE_LIMIT_BYTES, ImageBatches
from export.job import log
from export.settings import QatSettings
from formats.datasets import DatasetSplits, SubsetSource
from formats.progress import stage


class TrainImages:
    """The training split through the evaluation transform, decoded once, in a new order each epoch,
    each batch flipped (half of its images) and shifted: the target is the FP32 student's output on
    the same input, so any nearby input teaches, and a small split goes further."""

    def __init__(self, splits: DatasetSplits, pre: dict, s: QatSettings) -> None:
        h, w = pre["input_size"]
        fits = max(s.batch_size, CACHE_LIMIT_BYTES // (3 * h * w * 4))
        source = splits.train
        if len(source) > fits:  # decoded once and held in memory: a seeded sample of what fits in 1 GiB
            log(f"quantization-aware training uses {fits} of the {len(source)} training images (what fits in "
                f"{CACHE_LIMIT_BYTES >> 30} GiB decoded)")
            source = SubsetSource(source, sorted(np.random.default_rng(s.seed).permutation(len(source))[:fits].tolist()))
        decoded = []
        with stage("qat: training images", total=len(source), unit="image") as step:
            for x, _ in ImageBatches(source, pre, s.batch_size):
                decoded.append(x)  # (B, 3, H, W)
                step.advance(len(x))
        self.x = np.concatenate(decoded)  # (N, 3, H, W)
        self.batch_size, self.seed = s.batch_size, s.seed

    @property
    def batches_per_epoch(self) -> int:
        return len(self.x) // self.batch_size

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]:
        rng = np.random.default_rng([self.seed, epoch])  # the order, flips and shifts of this epoch
        order = rng.permutation(len(self.x))
        for start in range(0, len(order) - self.batch_size + 1, self.batch_size):  # full batches only
            yield augment(torch.from_numpy(self.x[order[start:start + self.batch_size]]), rng)  # (B, 3, H, W)


def augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, H, W): a random half mirrored, the batch shifted by up to 1/8 of its size."""
    h, w = x.shape[-2:]
    flip = torch.from_numpy(rng.random(len(x)) < 0.5)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    pad = max(1, min(h, w) // 8)
    dy, dx = rng.integers(0, 2 * pad + 1, size=2)
    return F.pad(x, (pad, pad, pad, pad), mode="reflect")[..., dy:dy + h, dx:dx + w]
