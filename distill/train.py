"""The training loop: student (+ condensation layers) against a frozen teacher, or the CE baseline.

One epoch: seeded shuffle, seeded views, forward/backward (bf16 autocast on CUDA), scheduler
step, validation, ``last.pt`` every epoch, ``best.pt`` on a new best validation top-1. The test
split is evaluated once, at the end, with the best weights.

Teacher targets come from a teacher-embedding cache (``distill.cache``; by default built on first
use and reused, ``distill.cache_ready``), in which case the teacher is never loaded during
training, or from the teacher run online (``teacher.cache=online``). Before any work,
``distill.preflight`` lists every file the run needs and cannot download. Under ``torchrun`` the
student is wrapped in DistributedDataParallel; metrics are summed over ranks and only rank 0
writes files.

This module owns setup, the epoch loop and the final test evaluation; the run's state and files
are ``distill.run_state``, evaluation ``distill.evaluate``, printed progress ``distill.progress``.
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from distill.batches import epoch_batches
from distill.cache_ready import prepare_cache
from distill.checkpoint import atomic_save
from distill.config import Config, dump_yaml
from distill.data import TrainViews, ViewSchedule
from distill.dist import all_reduce_sum, barrier, init_distributed
from distill.evaluate import autocast, beside_zero_shot, evaluate
from distill.losses import cosine_factor, w_cls_schedule
from distill.heads import Condensation
from distill.loss_terms import registered_terms
from distill.method import Trainable
from distill.preflight import check_names, preflight
from distill.pool import Pool, split_sources
from distill.pool_student import pool_student_logits
from distill.progress import postfix, report_epoch, report_student, report_teacher
from distill.run_state import Run, append_jsonl, artifact, restore, results, resume_state
from distill.selection import selection, warn_noisy_selection
from distill.targets import teacher_side
from distill.transforms import pool_student_sampler, pool_view_sampler, preprocessing_spec, student_target, view_sampler
from formats.datasets import DatasetSplits
from formats.errors import UserError
from formats.files import remove_stale_temps, writable_folder, write_text
from formats.image_check import check_images
from formats.run_results import RESULTS_FILE
from students.checkpoint import read_checkpoint
from students.registry import create_student, normalization_mismatch


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device={name} but no CUDA GPU is available: use train.device=cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(cfg: Config) -> Run:
    """Data, teacher targets, student, condensation layers, optimizer; restore ``last.pt`` on resume."""
    run_dir = Path(cfg.train.out_dir) / cfg.train.name
    last = run_dir / "last.pt"
    if last.exists() and not cfg.train.resume:
        raise UserError(f"{run_dir} already holds a run (last.pt): pass train.resume=true to continue it, "
                        f"or train.name=<new name> to start another")
    if cfg.train.resume and not last.exists():
        raise UserError(f"train.resume=true but {last} does not exist: drop train.resume to start a new run")
    ctx, device = init_distributed(pick_device(cfg.train.device))
    check_names(cfg)  # fail on a typo before minutes of data and teacher loading
    splits, pool = preflight(cfg, verbose=ctx.is_main)  # every file it needs is here: or one error listing all
    if cfg.data.check_images and not cfg.train.resume:  # a bad file fails now, not mid-epoch
        check_splits(splits, ctx.is_main, pool)
    cfg, _ = prepare_cache(cfg, (splits, pool), ctx, device)  # teacher.cache resolved: built once, or reused
    seed_everything(cfg.train.seed)  # after the cache build, which seeds a random-weight teacher
    student = create_student(cfg.student.arch, len(splits.class_names), cfg.student.weights).to(device)
    mismatch = normalization_mismatch(cfg.student.arch, cfg.student.weights, tuple(cfg.data.mean), tuple(cfg.data.std))
    if mismatch and ctx.is_main:
        print(mismatch, file=sys.stderr)
    side = teacher_side(cfg, splits, device, pool)
    heads = None
    if side.anchors is not None:
        heads = Condensation(side.anchors, student.feature_dim, cfg.method.visual, cfg.method.linguistic).to(device)
        if side.anchor_bias is not None:
            heads.anchor_bias.copy_(side.anchor_bias)
    model: nn.Module = Trainable(student, heads, cfg.method)
    if ctx.enabled:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer, scheduler = make_optimizer(cfg, list(model.parameters()))
    train_set = TrainViews(splits.train, view_sampler(cfg.data, side.view_seed), student_target(cfg.data),
                           side.teacher_view)
    run = Run(cfg, run_dir, device, ctx, splits, student, heads, model, side.targets, side.num_views, optimizer,
              scheduler, train_set, preprocessing_spec(cfg.data), side.diagnostics, pool=pool,
              pool_targets=side.pool_targets, pool_views=side.pool_views)
    if pool is not None:
        run.pool_set = TrainViews(pool.source, pool_view_sampler(cfg.data, side.view_seed), student_target(cfg.data),
                                  side.teacher_view, pool_student_sampler(cfg.data, cfg.train.seed + POOL_VIEW_SALT))
        run.pool_student_logits = pool_student_logits(cfg, splits.class_names, pool, device, ctx.is_main)
    if cfg.train.resume:
        restore(run, last)
        if ctx.is_main:  # say where it goes on from: the epochs done are not run again
            print(f"resuming {run_dir} from {last.name}: {run.start_epoch} of {cfg.train.epochs} epochs done, "
                  f"best validation top-1 so far {100 * run.best_val:.2f}%", file=sys.stderr)
    return run


def make_optimizer(cfg: Config, params: list[torch.nn.Parameter]):
    t = cfg.train
    if t.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    if t.scheduler == "step":
        return opt, torch.optim.lr_scheduler.StepLR(opt, t.step_size, t.gamma)
    if t.scheduler == "cosine":
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, t.epochs)
    return opt, None


POOL_VIEW_SALT = 1_000_003  # the pool's view choices: a stream of their own, not the labeled indices' one


def train_one_epoch(run: Run, epoch: int) -> dict[str, float]:
    cfg, dev = run.cfg, run.device
    m = cfg.method
    w_cls = w_cls_schedule(epoch, cfg.train.epochs, m.schedule, m.w_cls_start, m.w_cls_end, m.ramp_fraction)
    if run.targets is None:
        w_cls = 1.0  # the baseline is CE only
    run.model.train()
    run.train_set.set_view(ViewSchedule(cfg.train.seed, epoch, run.num_views))
    if run.pool_set is not None:
        run.pool_set.set_view(ViewSchedule(cfg.train.seed + POOL_VIEW_SALT, epoch, run.pool_views))
    loader, batches = epoch_batches(run, epoch)
    names = loss_names()
    sums = torch.zeros(len(names), dtype=torch.float64, device=dev)  # summed on the device: no sync per step
    seen, weight, start = 0, 0, time.perf_counter()
    for step, (labeled, unlabeled) in enumerate(batches):
        if cfg.train.scheduler == "cosine_steps":  # annealed every step: few long epochs (a large pool) too
            for group in run.optimizer.param_groups:
                group["lr"] = cfg.train.lr * cosine_factor((epoch + step / len(loader)) / cfg.train.epochs)
        (x_s, y, t, y2, lam), n_lab = _labeled_args(run, labeled)
        x_u, t_u, z2_u, n_unl = _unlabeled_args(run, unlabeled)
        with autocast(dev, cfg.train.amp):
            losses = run.model(x_s, y, t, w_cls, y2, lam, x_u, t_u, z2_u)
        run.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        run.optimizer.step()
        n = n_lab or n_unl  # the loss averages are per labeled image (per unlabeled one without labels)
        seen, weight = seen + n_lab + n_unl, weight + n
        zero = torch.zeros((), device=dev)
        sums += torch.stack([losses.get(k, zero).detach().double() for k in names]) * n
        if step % 10 == 0:  # reading the loss waits for the GPU: only now and then
            postfix(loader, losses["loss"], seen / (time.perf_counter() - start))
    if run.scheduler:
        run.scheduler.step()
    local = sums.tolist()  # waits for the GPU, so the epoch time below is complete
    elapsed = time.perf_counter() - start
    *totals, weight, seen = all_reduce_sum([*local, float(weight), float(seen)], run.ctx, dev)
    stats = {f"train_{k}": s / max(weight, 1) for k, s in zip(names, totals) if k in _present(run)}
    return {**stats, "w_cls": w_cls, "images_per_s": seen / elapsed, "epoch_time_s": elapsed}


def loss_names() -> tuple[str, ...]:
    """What ``step_losses`` may return: the loss, CE, every registered KD term, and each on the unlabeled batch."""
    kd = tuple(t.name for t in registered_terms())
    return ("loss", "cls", *kd, *(f"{k}_u" for k in kd))


def _present(run: Run) -> tuple[str, ...]:
    """The loss terms this run has: CE (with labels), the KD terms (with a teacher), the pool's terms."""
    kd = [t.name for t in registered_terms()]
    names = ["loss"]
    if run.cfg.data.labels == "given":
        names += ["cls", *kd] if run.targets else ["cls"]
    if run.pool_set is not None:
        names += [f"{k}_u" for k in kd]
    return tuple(names)


def _labeled_args(run: Run, batch) -> tuple[tuple, int]:
    """(x, y, t, y2, lam) of a labeled batch on the device, and its size; Nones and 0 without one."""
    if batch is None:
        return (None, None, None, None, None), 0
    dev = run.device
    x_s, x_t, y, y2, lam, idx, view = batch
    x_s, y = x_s.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
    if run.cfg.data.mix == "none":
        y2 = lam = None  # plain CE, exactly as without blends
    else:
        y2, lam = y2.to(dev, non_blocking=True), lam.to(dev, torch.float32, non_blocking=True)
    t = run.targets(x_t, idx, view) if run.targets else None  # (B, D)
    return (x_s, y, t, y2, lam), len(y)


def _unlabeled_args(run: Run, batch) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, int]:
    """(x_u, t_u, z2_u, B_u): an unlabeled batch, the teacher's embeddings of its views (B_u, D) and the
    earlier student's logits on its images (B_u, C; None without ``method.pool_student``)."""
    if batch is None or run.pool_targets is None:
        return None, None, None, 0
    x_u, x_tu, _, _, _, idx, view = batch
    z2_u = None if run.pool_student_logits is None else run.pool_student_logits[idx.to(run.device)]
    return x_u.to(run.device, non_blocking=True), run.pool_targets(x_tu, idx, view), z2_u, len(x_u)


def _evaluate(run: Run, source) -> dict[str, float]:
    d = run.cfg.data
    return evaluate(run.student, source, run.preprocessing, run.device, d.eval_batch_size, d.workers,
                    run.cfg.train.amp, run.ctx)


def checkpoint_room(student: torch.nn.Module) -> int:
    """Bytes the run's files need at most: best.pt, last.pt with the optimiser's two moments and the
    condensation heads, and one temporary copy while a checkpoint is written (about 6x the weights)."""
    return 6 * sum(p.numel() * p.element_size() for p in student.parameters()) + (1 << 20)


def fit(cfg: Config) -> Path:
    """Train according to ``cfg``; returns the path of ``best.pt`` (with test metrics filled in)."""
    run = setup(cfg)
    if run.ctx.is_main:
        writable_folder(run.dir, "train.out_dir", checkpoint_room(run.student))  # before epoch 1, not after it
        remove_stale_temps(run.dir)  # a killed run's half-written files (only rank 0 writes here)
        write_text(run.dir / "config.yaml", dump_yaml(cfg))
        if run.start_epoch == 0:
            results(run, None).write(run.dir / RESULTS_FILE)
            (run.dir / "metrics.jsonl").unlink(missing_ok=True)  # lines of a run killed before its first last.pt
        report_teacher(cfg, run.teacher_diagnostics)
        warn_noisy_selection(cfg, len(run.splits.val), len(run.splits.class_names))
    select = selection(cfg, len(run.splits.val))
    for epoch in range(run.start_epoch, cfg.train.epochs):
        stats = train_one_epoch(run, epoch)
        val = _evaluate(run, run.splits.val)
        improved = val["top1"] > run.best_val if select == "best_val" else epoch + 1 == cfg.train.epochs
        run.best_val = max(run.best_val, val["top1"])
        record = {"epoch": epoch + 1, **stats, **{f"val_{k}": v for k, v in val.items()}, "best": improved}
        if run.ctx.is_main:
            if improved:
                atomic_save(artifact(run, {"val": val}, epoch + 1), run.dir / "best.pt")
            # the epoch's line before last.pt: a kill between them leaves a line that resume drops and
            # writes again (it keeps the lines up to last.pt's epoch), never a missing one
            append_jsonl(run.dir / "metrics.jsonl", record)
            atomic_save(resume_state(run, {"val": val}, epoch + 1), run.dir / "last.pt")
            report_epoch(cfg, record)
    return finish(run)


def check_splits(splits: DatasetSplits, verbose: bool, pool: Pool | None = None) -> None:
    """Every image of every split and of the pool decoded once (formats.image_check); all unreadable ones in
    one error."""
    report = check_images(split_sources(splits, pool))
    if verbose:
        print(f"checked {report.images} images in {report.seconds:.1f} s", file=sys.stderr)
    report.raise_if_bad("Replace or delete them (python -m distill check --config ... lists them all), "
                        "or pass data.check_images=false to find them mid-epoch instead")


def finish(run: Run) -> Path:
    """Evaluate the selected weights (``train.select``) once on the test split; store them in ``best.pt``."""
    best_path = run.dir / "best.pt"
    barrier(run.ctx)  # every rank reads the best.pt rank 0 has written
    best, _ = read_checkpoint(best_path)
    if "test" in best["metrics"]:
        return best_path
    run.student.load_state_dict(best["state_dict"])
    best["metrics"]["test"] = _evaluate(run, run.splits.test)
    if run.cfg.data.labels == "none" and run.ctx.is_main and len(run.splits.test):
        bias = run.heads.anchor_bias if run.heads is not None and bool(run.heads.anchor_bias.any()) else None
        best["metrics"]["test"].update(beside_zero_shot(run.cfg, run.splits, run.student, run.preprocessing, run.device,
                                                        bias))
    if run.ctx.is_main:
        atomic_save(best, best_path)
        results(run, best).write(run.dir / RESULTS_FILE)
        report_student(run.cfg, best["metrics"], run.teacher_diagnostics)
    barrier(run.ctx)
    return best_path
