"""The teacher's side of a training run: per-batch targets, calibrated anchors and diagnostics.

Targets come from a teacher-embedding cache (then the teacher is never loaded) or from the teacher
run online (``teacher.cache=online``). Either way, before the first epoch the teacher's embeddings
of the training and validation splits give the diagnostics (zero-shot, calibrated and linear-probe
top-1 on validation) and the anchors of the linguistic term (``distill.calibrate``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from distill.cache import TeacherCache, eval_embeddings, open_cache, open_pool_cache
from distill.cache_key import fingerprint_fields, pool_fingerprint_fields
from distill.cache_ready import uses_cache
from distill.calibrate import Calibration, TeacherEmbeddings, balance_prior, calibrate, diagnostics
from distill.config import Config, MethodConfig
from distill.data import PROMPTS, DatasetSplits
from distill.pool import Pool
from distill.teacher import Teacher
from distill.transforms import TargetSpec, ViewSampler, view_sampler
from formats.datasets import ImageSource

# (x_teacher, indices, views) -> t (B, D) on the training device
Targets = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TeacherSide:
    targets: Targets | None  # None: the CE-only baseline
    anchors: torch.Tensor | None  # (C, D) anchors of the linguistic term (prompts or calibrated)
    teacher_view: TargetSpec | None  # online teacher: the view it needs; cached or none: None
    num_views: int  # 0: a fresh view every epoch (online teacher); K: one of the K cached views
    view_seed: int  # seed of the training views (the cache's own seed when cached)
    diagnostics: dict | None
    pool_targets: Targets | None = None  # the unlabeled pool's targets (data.unlabeled); None: no pool
    pool_views: int = 0  # 0: a fresh view every epoch (online); K: one of the pool's K cached views
    anchor_bias: torch.Tensor | None = None  # (C,) the zero-shot target's class prior (data.labels=none, balanced)


def teacher_side(cfg: Config, splits: DatasetSplits, device: torch.device, pool: Pool | None = None) -> TeacherSide:
    if not cfg.teacher.enabled:
        return TeacherSide(None, None, None, 0, cfg.train.seed, None)
    method = dataclasses.replace(cfg.method, anchors="text") if cfg.data.labels == "none" else cfg.method
    if uses_cache(cfg):  # teacher.cache is a folder here (distill.cache_ready.prepare_cache)
        cache = open_cache(cfg.teacher.cache, fingerprint_fields(cfg, splits))
        emb = cached_embeddings(cache, splits, view_sampler(cfg.data, cfg.teacher.cache_seed)).to(device)
        side = TeacherSide(_cached_targets(cache, device), None, None, cache.num_views, cfg.teacher.cache_seed, None)
        pool_emb = None
        if pool is not None:
            pool_cache = open_pool_cache(cfg.teacher.cache, pool_fingerprint_fields(cfg, pool.hashes))
            side.pool_targets, side.pool_views = _cached_targets(pool_cache, device), pool_cache.num_views
            pool_emb = lambda: pool_cache.train_embeddings().flatten(0, 1)  # noqa: E731 - (N·K, D), when needed
        return _with_anchors(side, emb, method, cfg, pool_emb)
    teacher = Teacher(cfg.teacher.model, cfg.teacher.pretrained, device)
    text = teacher.encode_classes(splits.class_names, cfg.data.prompts or PROMPTS[cfg.data.name]).cpu()
    emb = _online_embeddings(teacher, splits, text, cfg).to(device)

    def online(x_t: torch.Tensor, idx: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        # clone(): inference-mode tensors cannot enter autograd (the condensation MLP).
        return teacher.encode_images(x_t).clone()  # (B, D)

    side = TeacherSide(online, None, teacher.target, 0, cfg.train.seed, None,
                       online if pool is not None else None, 0)
    pool_emb = None if pool is None else lambda: torch.from_numpy(eval_embeddings(teacher, pool.source, cfg,
                                                                                  "teacher: unlabeled images"))
    return _with_anchors(side, emb, method, cfg, pool_emb)


def _with_anchors(side: TeacherSide, emb: TeacherEmbeddings, method: MethodConfig, cfg: Config,
                  pool_emb: Callable[[], torch.Tensor] | None = None) -> TeacherSide:
    """The anchors of the linguistic term and the diagnostics; without labels, the prompts (zero-shot), their
    class prior balanced over the unlabeled pool (``pool_emb()``: its teacher embeddings) unless
    ``method.zero_shot_prior=prompts``."""
    calibration: Calibration = calibrate(emb, method)
    if cfg.data.labels == "none":
        calibration.reason = "data.labels=none: the teacher's zero-shot over the prompts is the target"
    side.anchors, side.diagnostics = calibration.anchors, diagnostics(emb, calibration, method.anchors)
    if cfg.data.labels == "none" and method.zero_shot_prior == "balanced" and pool_emb is not None:
        side.anchor_bias = balance_prior(pool_emb().to(emb.val.device).float(), side.anchors, method.logit_scale)
        balanced = (method.logit_scale * emb.val @ side.anchors.t() + side.anchor_bias).argmax(1)
        side.diagnostics["balanced_zero_shot_val_top1"] = float(balanced.eq(emb.val_labels).float().mean())
        side.diagnostics["calibrated_val_top1"] = side.diagnostics["balanced_zero_shot_val_top1"]  # what it distils
        calibration.reason += ", its class prior balanced over the unlabeled images (method.zero_shot_prior)"
        side.diagnostics["calibration_reason"] = calibration.reason
    if cfg.data.labels == "none" and side.diagnostics["warnings"]:  # no labels to calibrate on: say what helps
        side.diagnostics["warnings"] = [
            f"the teacher's zero-shot top-1 on validation is {100 * side.diagnostics['zero_shot_val_top1']:.1f}%, "
            f"near chance: with data.labels=none its class prompts are the student's only target, so write "
            f"data.prompts that describe these images, or give labels (data.labels=given) to calibrate them"]
    return side


def zero_shot_predictions(cfg: Config, splits: DatasetSplits, source: ImageSource, device: torch.device,
                          bias: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) the teacher's zero-shot class of every image of ``source`` (centre view, the prompts; with ``bias``
    (C,) added to its logits: the balanced prior)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.teacher.cache_seed)  # a random-weight teacher ("none") as the cache built it
        teacher = Teacher(cfg.teacher.model, cfg.teacher.pretrained, device)
    text = teacher.encode_classes(splits.class_names, cfg.data.prompts or PROMPTS[cfg.data.name]).cpu()  # (C, D)
    emb = torch.from_numpy(eval_embeddings(teacher, source, cfg, "teacher: zero-shot"))  # (N, D)
    logits = cfg.method.logit_scale * emb @ F.normalize(text.float(), dim=-1).t()  # (N, C)
    return (logits if bias is None else logits + bias.cpu()).argmax(dim=1)


def _cached_targets(cache: TeacherCache, device: torch.device) -> Targets:
    def cached(x_t: torch.Tensor, idx: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        return cache.lookup(idx, view).to(device, non_blocking=True)  # (B, D), never runs the teacher
    return cached


def cached_embeddings(cache: TeacherCache, splits: DatasetSplits, sampler: ViewSampler) -> TeacherEmbeddings:
    """The cache as TeacherEmbeddings: every cached view of the training split (blended ones marked), val,
    text anchors."""
    n, plain = len(splits.train), None  # None: no view is blended
    if sampler.mix != "none":
        plain = torch.tensor([[sampler.mix_params(i, v, n) is None for v in range(cache.num_views)] for i in range(n)],
                             dtype=torch.bool).reshape(n, cache.num_views)  # (N, K)
    return TeacherEmbeddings(cache.train_embeddings(), torch.tensor(splits.train.labels), cache.val_embeddings,
                             torch.tensor(splits.val.labels), cache.text_embeddings, plain)


def _online_embeddings(teacher: Teacher, splits: DatasetSplits, text: torch.Tensor, cfg: Config) -> TeacherEmbeddings:
    """One teacher pass over the centre views of train and val (a cache has them already)."""
    train = eval_embeddings(teacher, splits.train, cfg, "teacher: training images")
    train = torch.from_numpy(train)[:, None]  # (N, 1, D)
    val = torch.from_numpy(eval_embeddings(teacher, splits.val, cfg, "teacher: validation images"))  # (N_val, D)
    return TeacherEmbeddings(train, torch.tensor(splits.train.labels), val, torch.tensor(splits.val.labels), text)
