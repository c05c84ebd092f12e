"""The training loop: student (+ condensation layers) against a frozen teacher, or the CE baseline.

One epoch: seeded shuffle, seeded views, forward/backward (bf16 autocast on CUDA), scheduler
step, validation, ``last.pt`` every epoch, ``best.pt`` on a new best validation top-1. The test
split is evaluated once, at the end, with the best weights.

Teacher targets come from the teacher run online, or from a teacher-embedding cache
(``distill.cache``), in which case the teacher is never loaded. Under ``torchrun`` the student is
wrapped in DistributedDataParallel; metrics are summed over ranks and only rank 0 writes files.
"""
from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from distill.checkpoint import atomic_save, student_artifact
from distill.config import Config, MethodConfig, dump_yaml, to_dict
from distill.data import DatasetSplits, EvalImages, TrainViews, ViewSchedule, dataset_spec, load_dataset
from distill.dist import DistContext, all_reduce_sum, barrier, init_distributed
from distill.losses import w_cls_schedule
from distill.method import Condensation, step_losses
from distill.targets import Targets, teacher_side
from distill.teacher import resolve_source
from distill.transforms import ViewSampler, preprocessing_spec, student_target
from formats.errors import UserError
from formats.files import write_text
from students.checkpoint import read_checkpoint
from students.registry import Student, create_student, list_students


class Trainable(nn.Module):
    """Student + condensation layers as one module, so DDP sees a single forward per step."""

    def __init__(self, student: Student, heads: Condensation | None, method: MethodConfig) -> None:
        super().__init__()
        self.student, self.heads, self.method = student, heads, method

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None, w_cls: float):
        return step_losses(self.student, self.heads, x, y, t, self.method, w_cls)


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


def check_names(cfg: Config) -> None:
    if cfg.student.arch not in list_students():
        raise UserError(f"unknown student {cfg.student.arch!r}; choose one of: {', '.join(list_students())}")
    if cfg.teacher.enabled and not cfg.teacher.cache:
        resolve_source(cfg.teacher.model, cfg.teacher.pretrained)


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
    seed_everything(cfg.train.seed)
    splits = load_dataset(cfg.data)
    student = create_student(cfg.student.arch, len(splits.class_names), cfg.student.weights).to(device)
    side = teacher_side(cfg, splits, device)
    heads = None
    if side.anchors is not None:
        heads = Condensation(side.anchors, student.feature_dim, cfg.method.visual, cfg.method.linguistic).to(device)
    model: nn.Module = Trainable(student, heads, cfg.method)
    if ctx.enabled:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer, scheduler = make_optimizer(cfg, list(model.parameters()))
    sampler = ViewSampler(side.view_seed, (cfg.data.crop_scale_min, 1.0), cfg.data.hflip)
    train_set = TrainViews(splits.train, sampler, student_target(cfg.data), side.teacher_view)
    run = Run(cfg, run_dir, device, ctx, splits, student, heads, model, side.targets, side.num_views, optimizer,
              scheduler, train_set, preprocessing_spec(cfg.data), side.diagnostics)
    if cfg.train.resume:
        restore(run, last)
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


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def _train_loader(run: Run, epoch: int) -> DataLoader:
    cfg = run.cfg
    drop_last = len(run.train_set) > cfg.data.batch_size * run.ctx.world
    common = dict(batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers, drop_last=drop_last,
                  pin_memory=run.device.type == "cuda")
    if run.ctx.enabled:
        sampler = DistributedSampler(run.train_set, run.ctx.world, run.ctx.rank, shuffle=True,
                                     seed=cfg.train.seed, drop_last=drop_last)
        sampler.set_epoch(epoch)
        return DataLoader(run.train_set, sampler=sampler, **common)
    # Shuffle order depends on (seed, epoch) only, so a resumed run replays the same batches.
    gen = torch.Generator().manual_seed(cfg.train.seed * 100_003 + epoch)
    return DataLoader(run.train_set, shuffle=True, generator=gen, **common)


def train_one_epoch(run: Run, epoch: int) -> dict[str, float]:
    cfg, dev = run.cfg, run.device
    m = cfg.method
    w_cls = w_cls_schedule(epoch, cfg.train.epochs, m.schedule, m.w_cls_start, m.w_cls_end, m.ramp_fraction)
    if run.targets is None:
        w_cls = 1.0  # the baseline is CE only
    run.model.train()
    run.train_set.set_view(ViewSchedule(cfg.train.seed, epoch, run.num_views))
    loader = _train_loader(run, epoch)
    names = ("loss", "cls", "vis", "ling")
    sums = torch.zeros(len(names), dtype=torch.float64, device=dev)  # summed on the device: no sync per step
    seen, start = 0, time.perf_counter()
    for step, (x_s, x_t, y, idx, view) in enumerate(_progress(loader, run, epoch)):
        x_s, y = x_s.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        t = run.targets(x_t, idx, view) if run.targets else None  # (B, D)
        with _autocast(dev, cfg.train.amp):
            losses = run.model(x_s, y, t, w_cls)
        run.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        run.optimizer.step()
        seen += len(y)
        zero = torch.zeros((), device=dev)
        sums += torch.stack([losses.get(k, zero).detach().double() for k in names]) * len(y)
        if step % 10 == 0:  # reading the loss waits for the GPU: only now and then
            _postfix(loader, losses["loss"], seen / (time.perf_counter() - start))
    if run.scheduler:
        run.scheduler.step()
    local = sums.tolist()  # waits for the GPU, so the epoch time below is complete
    elapsed = time.perf_counter() - start
    *totals, seen = all_reduce_sum([*local, float(seen)], run.ctx, dev)
    present = names if run.targets else names[:2]
    stats = {f"train_{k}": s / max(seen, 1) for k, s in zip(names, totals) if k in present}
    return {**stats, "w_cls": w_cls, "images_per_s": seen / elapsed, "epoch_time_s": elapsed}


def _progress(loader: DataLoader, run: Run, epoch: int) -> Iterator:
    if not run.cfg.train.progress or not run.ctx.is_main:
        return iter(loader)
    from tqdm import tqdm
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{run.cfg.train.epochs}", leave=False, dynamic_ncols=True)
    loader._bar = bar  # type: ignore[attr-defined]
    return iter(bar)


def _postfix(loader: DataLoader, loss: torch.Tensor, rate: float) -> None:
    bar = getattr(loader, "_bar", None)
    if bar is not None:
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}", img_s=f"{rate:.1f}")


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
        with _autocast(device, amp):
            logits = student(x).float()  # (B, C)
        loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, k)
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(dim=1).sum())
        n += len(y)
    correct1, correct5, loss_sum, n = all_reduce_sum([correct1, correct5, loss_sum, n], ctx, device)
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss_sum / n, "images": int(n)}


def _evaluate(run: Run, source) -> dict[str, float]:
    d = run.cfg.data
    return evaluate(run.student, source, run.preprocessing, run.device, d.eval_batch_size, d.num_workers,
                    run.cfg.train.amp, run.ctx)


def fit(cfg: Config) -> Path:
    """Train according to ``cfg``; returns the path of ``best.pt`` (with test metrics filled in)."""
    run = setup(cfg)
    if run.ctx.is_main:
        run.dir.mkdir(parents=True, exist_ok=True)
        write_text(run.dir / "config.yaml", dump_yaml(cfg))
        if run.start_epoch == 0:
            write_text(run.dir / "results.json", json.dumps(_results(run, None), indent=2))
        _report_teacher(cfg, run.teacher_diagnostics)
    for epoch in range(run.start_epoch, cfg.train.epochs):
        stats = train_one_epoch(run, epoch)
        val = _evaluate(run, run.splits.val)
        improved = val["top1"] > run.best_val
        run.best_val = max(run.best_val, val["top1"])
        record = {"epoch": epoch + 1, **stats, **{f"val_{k}": v for k, v in val.items()}, "best": improved}
        if run.ctx.is_main:
            if improved:
                atomic_save(_artifact(run, {"val": val}, epoch + 1), run.dir / "best.pt")
            atomic_save(_resume_state(run, {"val": val}, epoch + 1), run.dir / "last.pt")
            _append_jsonl(run.dir / "metrics.jsonl", record)
            _report(cfg, record)
    return finish(run)


def finish(run: Run) -> Path:
    """Evaluate the best weights once on the test split and store the figures in ``best.pt``."""
    best_path = run.dir / "best.pt"
    barrier(run.ctx)  # every rank reads the best.pt rank 0 has written
    best, _ = read_checkpoint(best_path)
    if "test" in best["metrics"]:
        return best_path
    run.student.load_state_dict(best["state_dict"])
    best["metrics"]["test"] = _evaluate(run, run.splits.test)
    if run.ctx.is_main:
        atomic_save(best, best_path)
        write_text(run.dir / "results.json", json.dumps(_results(run, best), indent=2))
        _report_student(run.cfg, best["metrics"], run.teacher_diagnostics)
    barrier(run.ctx)
    return best_path


def _results(run: Run, best: dict | None) -> dict[str, Any]:
    """results.json: the teacher's diagnostics (before epoch 1), then the student beside them."""
    out: dict[str, Any] = {"teacher": run.teacher_diagnostics}
    if best is not None:
        out = {"best_epoch": best["epoch"], **best["metrics"], **out}
    return out


def _artifact(run: Run, metrics: dict, epoch: int) -> dict[str, Any]:
    return student_artifact(run.student, run.cfg.student.arch, run.splits.class_names, run.preprocessing,
                            asdict(dataset_spec(run.cfg.data)), to_dict(run.cfg), metrics, epoch)


def _resume_state(run: Run, metrics: dict, epoch: int) -> dict[str, Any]:
    state = _artifact(run, metrics, epoch)
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
    """Drop records of epochs after ``last_epoch`` (written just before an interruption)."""
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["epoch"] <= last_epoch]
        write_text(path, "".join(ln + "\n" for ln in keep))


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _report_teacher(cfg: Config, diag: dict | None) -> None:
    if diag is None:
        return
    if cfg.train.progress:
        print(f"teacher on validation ({diag['val_images']} images, chance {100 * diag['chance']:.1f}%): "
              f"zero-shot {100 * diag['zero_shot_val_top1']:.1f}%, with the {diag['anchors']} anchors the "
              f"linguistic term uses {100 * diag['calibrated_val_top1']:.1f}%, linear probe "
              f"{100 * diag['linear_probe_val_top1']:.1f}% ({diag['calibration_reason']})", flush=True)
    for warning in diag["warnings"]:  # shown even without progress output
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def _report_student(cfg: Config, metrics: dict, diag: dict | None) -> None:
    if not cfg.train.progress:
        return
    line = f"student: val top-1 {100 * metrics['val']['top1']:.2f}%, test top-1 {100 * metrics['test']['top1']:.2f}%"
    if diag is not None:
        line += (f" (teacher on val: zero-shot {100 * diag['zero_shot_val_top1']:.1f}%, "
                 f"linear probe {100 * diag['linear_probe_val_top1']:.1f}%)")
    print(line, flush=True)


def _report(cfg: Config, r: dict) -> None:
    if not cfg.train.progress:
        return
    kd = f" vis {r['train_vis']:.4f} ling {r['train_ling']:.4f}" if "train_vis" in r else ""
    print(f"epoch {r['epoch']}/{cfg.train.epochs}: loss {r['train_loss']:.4f} (cls {r['train_cls']:.4f}{kd}, "
          f"w_cls {r['w_cls']:.3f}) val top-1 {100 * r['val_top1']:.2f}%"
          f"{' *' if r['best'] else ''} [{r['images_per_s']:.0f} img/s]", flush=True)
