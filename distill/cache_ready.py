"""The teacher cache a run reads: by default built once, at a folder keyed by the setup, then reused.

``teacher.cache`` says where the teacher's targets come from:

- ``auto`` (the default): ``<train.out_dir>/teacher-cache/<first 16 hex of the fingerprint>/``
  (``distill.cache_key``). The first run of a setup builds it (the teacher's embeddings of
  ``teacher.cache_views`` views per training image), every later run of that setup reuses it:
  another seed, another student, ``distill compare``, ``python -m pipeline sweep``. A changed setup
  (other images, teacher, views) has another fingerprint, so another folder: never a refusal.
- ``online``: no cache; the teacher runs on every training step and sees a fresh view every epoch.
- a folder: that cache (built there when missing; a folder of another setup is refused).

``prepare_cache`` resolves the folder, builds what is missing (under ``torchrun`` each rank builds
its shards, ``distill.cache``; every rank waits for the others) and says so in one line.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from distill.cache_key import fingerprint_fields, pool_fingerprint_fields
from distill.config import Config, with_overrides
from distill.data import load_dataset
from distill.dist import DistContext, barrier
from distill.pool import Pool, load_pool
from formats.cache import fingerprint
from formats.datasets import DatasetSplits
from formats.errors import UserError
from formats.progress import duration

AUTO, ONLINE = "auto", "online"
Inputs = tuple[DatasetSplits, Pool | None]  # what a cache is keyed by: the splits and the unlabeled pool
DEFAULT_FOLDER = "teacher-cache"  # under train.out_dir


def uses_cache(cfg: Config) -> bool:
    """Whether a KD run of ``cfg`` reads a teacher cache (anything but ``teacher.cache=online``)."""
    return cfg.teacher.enabled and cfg.teacher.cache != ONLINE


def cache_folder(cfg: Config, splits: DatasetSplits) -> Path | None:
    """The folder ``cfg`` reads its teacher targets from; None: no cache (online teacher, or none)."""
    if not uses_cache(cfg):
        return None
    if cfg.teacher.cache != AUTO:
        return Path(cfg.teacher.cache)
    return Path(cfg.train.out_dir) / DEFAULT_FOLDER / fingerprint(fingerprint_fields(cfg, splits))[:16]


def with_cache_folder(cfg: Config, splits: DatasetSplits | None = None) -> Config:
    """``cfg`` with ``teacher.cache`` the folder it reads (``auto`` resolved); unchanged without a cache."""
    if not uses_cache(cfg) or cfg.teacher.cache != AUTO:
        return cfg
    folder = cache_folder(cfg, splits if splits is not None else load_dataset(cfg.data))
    return with_overrides(cfg, {"teacher.cache": str(folder)})


def run_inputs(cfg: Config, verbose: bool = False) -> Inputs:
    """The dataset's splits and the unlabeled pool (None without ``data.unlabeled``) the cache is keyed by."""
    splits = load_dataset(cfg.data)
    return splits, load_pool(cfg.data, splits, verbose=verbose)


def describe_cache(cfg: Config, verify: bool = True, inputs: Inputs | None = None) -> str:
    """Open (and verify) the whole cache of ``cfg`` (a folder): "N images x K views[, unlabeled: M x K']"."""
    from distill.cache import open_cache, open_pool_cache

    splits, pool = inputs if inputs is not None else run_inputs(cfg)
    done = open_cache(cfg.teacher.cache, fingerprint_fields(cfg, splits), verify)
    out = f"{done.meta.num_images} images x {done.num_views} views"
    if pool is not None:
        part = open_pool_cache(cfg.teacher.cache, pool_fingerprint_fields(cfg, pool.hashes), verify)
        out += f", unlabeled: {part.meta.num_images} images x {part.num_views} views"
    return out


def is_complete(cfg: Config, inputs: Inputs | None = None) -> bool:
    """Whether the cache folder of ``cfg`` holds every part it needs (sizes checked, not checksums)."""
    try:
        describe_cache(cfg, verify=False, inputs=inputs)
    except UserError:
        return False  # missing or incomplete: built or resumed; a folder of another setup is refused there
    return True


@dataclass(frozen=True)
class ReadyCache:
    """A cache ready to read: where, whether this call built it (and how long that took), what it holds."""

    folder: Path
    built: bool
    seconds: float
    contents: str  # "300 images x 16 views"

    def line(self) -> str:
        how = f"built in {duration(self.seconds)}" if self.built else "reused"
        return f"teacher cache: {how}, {self.folder} ({self.contents})"


def ensure_cache(cfg: Config, ctx: DistContext = DistContext(), device: torch.device | None = None,
                 inputs: Inputs | None = None) -> ReadyCache:
    """Build (or resume) the cache folder of ``cfg`` (``teacher.cache`` a folder) unless it is complete."""
    from distill import cache  # through the module: tests count the builds

    start, inputs = time.perf_counter(), inputs if inputs is not None else run_inputs(cfg)
    built = not is_complete(cfg, inputs)
    if built:
        cache.build_cache(cfg, ctx.rank, ctx.world, device)
    barrier(ctx)  # every rank's shards are written before any rank reads them
    return ReadyCache(Path(cfg.teacher.cache), built, time.perf_counter() - start,
                      describe_cache(cfg, verify=False, inputs=inputs))


def prepare_cache(cfg: Config, inputs: Inputs | None = None, ctx: DistContext = DistContext(),
                  device: torch.device | None = None) -> tuple[Config, ReadyCache | None]:
    """``cfg`` with its cache folder resolved, the cache built or reused, and one line on stderr (rank 0)
    saying which; without a cache (``teacher.cache=online``, or no teacher), ``(cfg, None)``."""
    if not uses_cache(cfg):
        if cfg.teacher.enabled and ctx.is_main:
            say("teacher: online (teacher.cache=online), it runs on every training step; leave teacher.cache out "
                "to build its embeddings once and train at the student's speed")
        return cfg, None
    inputs = inputs if inputs is not None else run_inputs(cfg)
    cfg = with_cache_folder(cfg, inputs[0])
    ready = ensure_cache(cfg, ctx, device, inputs)
    if ctx.is_main:
        say(ready.line())
    return cfg, ready


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
