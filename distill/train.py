"""The training loop: student (+ condensation layers) against a frozen teacher, or the CE baseline.

One epoch: seeded shuffle, seeded views, forward/backward (bf16 autocast on CUDA), scheduler
step, validation, ``last.pt`` every epoch, ``best.pt`` on a new best validation top-1. The test
split is evaluated once, at the end, with the best weights.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from distill.checkpoint import atomic_save, read_checkpoint, student_artifact
from distill.config import Config, dump_yaml, to_dict
from distill.data import PROMPTS, DatasetSplits, EvalImages, TrainViews, ViewSchedule, load_dataset
from distill.errors import UserError
from distill.losses import w_cls_schedule
from distill.method import Condensation, step_losses
from distill.students import Student, create_student, list_students
from distill.teacher import Teacher, resolve_weights
from distill.transforms import ViewSampler, preprocessing_spec, student_target


@dataclass
class Run:
    """Everything one training run holds (built by ``setup``)."""

    cfg: Config
    dir: Path
    device: torch.device
    splits: DatasetSplits
    student: Student
    heads: Condensation | None
    teacher: Teacher | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    train_set: TrainViews
    preprocessing: dict
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


def setup(cfg: Config) -> Run:
    """Data, teacher, student, condensation layers, optimizer; restore ``last.pt`` on resume."""
    run_dir = Path(cfg.train.out_dir) / cfg.train.name
    last = run_dir / "last.pt"
    if last.exists() and not cfg.train.resume:
        raise UserError(f"{run_dir} already holds a run (last.pt): pass train.resume=true to continue it, "
                        f"or train.name=<new name> to start another")
    if cfg.train.resume and not last.exists():
        raise UserError(f"train.resume=true but {last} does not exist: drop train.resume to start a new run")
    device = pick_device(cfg.train.device)
    check_names(cfg)  # fail on a typo before minutes of data and teacher loading
    seed_everything(cfg.train.seed)
    splits = load_dataset(cfg.data)
    teacher = Teacher(cfg.teacher.model, cfg.teacher.pretrained, device) if cfg.teacher.enabled else None
    student = create_student(cfg.student.arch, len(splits.class_names), cfg.student.weights).to(device)
    heads = None
    if teacher is not None:
        prompts = cfg.data.prompts or PROMPTS[cfg.data.name]
        text = teacher.encode_classes(splits.class_names, prompts).clone()  # (C, D)
        heads = Condensation(text, student.feature_dim).to(device)
    params = list(student.parameters()) + (list(heads.parameters()) if heads else [])
    optimizer, scheduler = make_optimizer(cfg, params)
    sampler = ViewSampler(cfg.train.seed, (cfg.data.crop_scale_min, 1.0), cfg.data.hflip)
    train_set = TrainViews(splits.train, sampler, student_target(cfg.data), teacher.target if teacher else None)
    run = Run(cfg, run_dir, device, splits, student, heads, teacher, optimizer, scheduler, train_set,
              preprocessing_spec(cfg.data))
    if cfg.train.resume:
        restore(run, last)
    return run


def check_names(cfg: Config) -> None:
    if cfg.student.arch not in list_students():
        raise UserError(f"unknown student {cfg.student.arch!r}; choose one of: {', '.join(list_students())}")
    if cfg.teacher.enabled:
        resolve_weights(cfg.teacher.model, cfg.teacher.pretrained)


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


def _loader(dataset, batch_size: int, workers: int, shuffle: bool, seed: int = 0, drop_last: bool = False):
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      generator=gen, drop_last=drop_last, pin_memory=torch.cuda.is_available())


def train_one_epoch(run: Run, epoch: int) -> dict[str, float]:
    cfg, dev = run.cfg, run.device
    m = cfg.method
    w_cls = w_cls_schedule(epoch, cfg.train.epochs, m.schedule, m.w_cls_start, m.w_cls_end, m.ramp_fraction)
    if run.teacher is None:
        w_cls = 1.0  # the baseline is CE only
    run.student.train()
    if run.heads:
        run.heads.train()
    run.train_set.set_view(ViewSchedule(cfg.train.seed, epoch))
    # Shuffle order depends on (seed, epoch) only, so a resumed run replays the same batches.
    drop_last = len(run.train_set) > cfg.data.batch_size
    loader = _loader(run.train_set, cfg.data.batch_size, cfg.data.num_workers, True,
                     seed=cfg.train.seed * 100_003 + epoch, drop_last=drop_last)
    sums: dict[str, float] = {}
    seen, start = 0, time.perf_counter()
    for x_s, x_t, y, _ in _progress(loader, run, epoch):
        x_s, y = x_s.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        # clone(): inference-mode tensors cannot enter autograd (the condensation MLP).
        t = run.teacher.encode_images(x_t).clone() if run.teacher else None  # (B, D)
        with _autocast(dev, cfg.train.amp):
            losses = step_losses(run.student, run.heads, x_s, y, t, m, w_cls)
        run.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        run.optimizer.step()
        seen += len(y)
        for k, v in losses.items():
            if k != "logits":
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(y)
        _postfix(loader, losses["loss"], seen / (time.perf_counter() - start))
    if run.scheduler:
        run.scheduler.step()
    elapsed = time.perf_counter() - start
    stats = {f"train_{k}": v / max(seen, 1) for k, v in sums.items()}
    return {**stats, "w_cls": w_cls, "images_per_s": seen / elapsed, "epoch_time_s": elapsed}


def _progress(loader: DataLoader, run: Run, epoch: int) -> Iterator:
    if not run.cfg.train.progress:
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
             workers: int, amp: bool = True) -> dict[str, float]:
    """Top-1 / top-5 accuracy and mean CE of ``student`` on an image source (eval transform)."""
    student.eval()
    loader = _loader(EvalImages(source, preprocessing), batch_size, workers, shuffle=False)
    correct1 = correct5 = 0
    loss_sum, n = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with _autocast(device, amp):
            logits = student(x).float()  # (B, C)
        loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, k)
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(dim=1).sum())
        n += len(y)
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss_sum / n, "images": n}


def fit(cfg: Config) -> Path:
    """Train according to ``cfg``; returns the path of ``best.pt`` (with test metrics filled in)."""
    run = setup(cfg)
    run.dir.mkdir(parents=True, exist_ok=True)
    _write_text(run.dir / "config.yaml", dump_yaml(cfg))
    for epoch in range(run.start_epoch, cfg.train.epochs):
        stats = train_one_epoch(run, epoch)
        val = evaluate(run.student, run.splits.val, run.preprocessing, run.device,
                       cfg.data.eval_batch_size, cfg.data.num_workers, cfg.train.amp)
        improved = val["top1"] > run.best_val
        run.best_val = max(run.best_val, val["top1"])
        record = {"epoch": epoch + 1, **stats, **{f"val_{k}": v for k, v in val.items()}, "best": improved}
        _append_jsonl(run.dir / "metrics.jsonl", record)
        if improved:
            atomic_save(_artifact(run, {"val": val}, epoch + 1), run.dir / "best.pt")
        atomic_save(_resume_state(run, {"val": val}, epoch + 1), run.dir / "last.pt")
        _report(cfg, record)
    return finish(run)


def finish(run: Run) -> Path:
    """Evaluate the best weights once on the test split and store the figures in ``best.pt``."""
    best_path = run.dir / "best.pt"
    best = read_checkpoint(best_path)
    if "test" in best["metrics"]:
        return best_path
    run.student.load_state_dict(best["state_dict"])
    test = evaluate(run.student, run.splits.test, run.preprocessing, run.device,
                    run.cfg.data.eval_batch_size, run.cfg.data.num_workers, run.cfg.train.amp)
    best["metrics"]["test"] = test
    atomic_save(best, best_path)
    _write_text(run.dir / "results.json", json.dumps({"best_epoch": best["epoch"], **best["metrics"]}, indent=2))
    return best_path


def _artifact(run: Run, metrics: dict, epoch: int) -> dict[str, Any]:
    return student_artifact(run.student, run.cfg.student.arch, run.splits.class_names, run.preprocessing,
                            to_dict(run.cfg), metrics, epoch)


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
    ckpt = read_checkpoint(path)
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
    _truncate_jsonl(run.dir / "metrics.jsonl", run.start_epoch)


def _truncate_jsonl(path: Path, last_epoch: int) -> None:
    """Drop records of epochs after ``last_epoch`` (written just before an interruption)."""
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["epoch"] <= last_epoch]
        _write_text(path, "".join(ln + "\n" for ln in keep))


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _report(cfg: Config, r: dict) -> None:
    if not cfg.train.progress:
        return
    kd = f" vis {r['train_vis']:.4f} ling {r['train_ling']:.4f}" if "train_vis" in r else ""
    print(f"epoch {r['epoch']}/{cfg.train.epochs}: loss {r['train_loss']:.4f} (cls {r['train_cls']:.4f}{kd}, "
          f"w_cls {r['w_cls']:.3f}) val top-1 {100 * r['val_top1']:.2f}%"
          f"{' *' if r['best'] else ''} [{r['images_per_s']:.0f} img/s]", flush=True)
