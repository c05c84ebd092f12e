"""A training epoch's batches: the labeled epoch, or a pass over the unlabeled pool beside a labeled stream.

Every order is a pure function of (``train.seed``, epoch), so a resumed run replays the same
batches; under ``torchrun`` each rank takes its share.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from distill.pool import pool_batch_size
from distill.progress import progress
from distill.run_state import Run


def _loader(run: Run, dataset: Dataset, batch_size: int, epoch: int) -> DataLoader:
    """One epoch's shuffled batches of ``dataset``; the order depends on (seed, epoch) only, so a resumed
    run replays the same batches."""
    cfg = run.cfg
    drop_last = len(dataset) > batch_size * run.ctx.world
    common = dict(batch_size=batch_size, num_workers=cfg.data.workers, drop_last=drop_last,
                  pin_memory=run.device.type == "cuda")
    if run.ctx.enabled:
        sampler = DistributedSampler(dataset, run.ctx.world, run.ctx.rank, shuffle=True, seed=cfg.train.seed,
                                     drop_last=drop_last)
        sampler.set_epoch(epoch)
        return DataLoader(dataset, sampler=sampler, **common)
    gen = torch.Generator().manual_seed(cfg.train.seed * 100_003 + epoch)
    return DataLoader(dataset, shuffle=True, generator=gen, **common)


class StreamSampler(Sampler[int]):
    """``count`` indices of range(n): seeded permutations one after another (every image once per pass),
    this rank's share of them under torchrun. The labeled batches beside a longer unlabeled epoch."""

    def __init__(self, n: int, count: int, seed: tuple[int, ...], rank: int = 0, world: int = 1) -> None:
        self.n, self.count, self.seed, self.rank, self.world = n, count, seed, rank, world

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        need, passes, out = self.count * self.world, 0, []
        while len(out) < need:
            out += np.random.default_rng([*self.seed, passes]).permutation(self.n).tolist()
            passes += 1
        return iter(out[self.rank:need:self.world])


def epoch_batches(run: Run, epoch: int) -> tuple[DataLoader, Iterable]:
    """(the loader that sets the epoch's length, its batches as (labeled or None, unlabeled or None)).

    Without a pool: the labeled epoch. With one: an epoch is one pass over the pool, and every step
    also takes the next labeled batch of a seeded stream (none when ``data.labels=none``).
    """
    cfg = run.cfg
    if run.pool_set is None:
        loader = _loader(run, run.train_set, cfg.data.batch_size, epoch)
        return loader, ((b, None) for b in progress(loader, run, epoch))
    loader = _loader(run, run.pool_set, pool_batch_size(cfg.data), epoch)
    if cfg.data.labels == "none":
        return loader, ((None, u) for u in progress(loader, run, epoch))
    stream = StreamSampler(len(run.train_set), len(loader) * cfg.data.batch_size, (cfg.train.seed, epoch),
                           run.ctx.rank, run.ctx.world)
    labeled = DataLoader(run.train_set, batch_size=cfg.data.batch_size, sampler=stream,
                         num_workers=cfg.data.workers, pin_memory=run.device.type == "cuda")
    return loader, ((b, u) for b, u in zip(labeled, progress(loader, run, epoch)))
