"""Typed, frozen run configuration with strict YAML loading and dotted overrides.

A config file is data only: YAML mapping sections (``data``, ``teacher``, ``student``,
``method``, ``train``) to the dataclasses below. Unknown keys are rejected with a "did you
mean", wrong types and out-of-range values name the key. ``key=value`` overrides use dotted
keys, as in ``train.epochs=20 data.batch_size=64``; values are parsed as YAML scalars.

This module owns the dataclasses, their range checks and ``load_config``; the strict
mapping-to-dataclass conversion they rely on is ``distill.config_parse``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from distill.config_parse import from_dict, read_yaml_text, set_dotted, split_override, to_dict
from distill.loss_terms import registered_terms
from distill.terms import load_terms
from formats.errors import UserError

load_terms()  # the KD terms of distill/terms/: their weights are config keys (method.w_<name>)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise UserError(f"config key {key}: {message}")


def _one_of(value: str, key: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    _check(value in choices, key, f"{value!r} is not one of {', '.join(choices)}")


@dataclass(frozen=True)
class DataConfig:
    """Dataset, split and image pipeline."""

    name: str = "cub"  # cub | imagefolder | aircraft | flowers102 | pets | dtd | food101
    root: str = "data/CUB_200_2011"
    download: bool = False  # torchvision datasets only: fetch when online
    label_names: str = ""  # imagefolder: optional file, one "folder<TAB>name" or name per line
    val_fraction: float = 0.1  # carved from the training split, stratified, with split_seed
    split_seed: int = 0
    input_size: int = 224  # student crop size (train and eval)
    resize_size: int = 256  # eval: shorter side resized to this, then centre crop
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_scale_min: float = 0.35  # RandomResizedCrop scale range [min, 1]
    hflip: bool = True
    mix: str = "none"  # none | mixup | cutmix: some training views blend two images (the teacher sees the blend)
    mix_prob: float = 0.5  # share of the training views that are blended
    mix_alpha: float = 1.0  # the blend's own-image share lam ~ Beta(alpha, alpha)
    batch_size: int = 64
    eval_batch_size: int = 128
    num_workers: int = 4  # DataLoader workers; at most the CPUs this process may use (``workers``)
    prompts: tuple[str, ...] = ()  # prompt templates with "{}"; empty: the dataset's defaults
    check_images: bool = True  # decode every image once before epoch 1 (in parallel) and list all unreadable ones
    # unlabeled images the teacher teaches on: a folder (searched recursively) or a file listing paths;
    # images that also appear in val or test (same bytes) are dropped and counted
    unlabeled: str = ""
    unlabeled_ratio: float = 1.0  # unlabeled images per labeled image in every step (the pool batch size)
    # the unlabeled views' RandomResizedCrop scale range [min, 1] (1: the whole image, flipped or not); never blended;
    # 1 beat 0.35 on the dev images (benchmarks/kd_pool_recipe.py): the teacher's targets on whole images are surer
    unlabeled_crop_scale_min: float = 1.0
    # what the student sees of an unlabeled image: teacher (the very view the teacher saw) | fresh (its own random
    # crop, scale [data.crop_scale_min, 1], and flip every epoch; the target stays the teacher's on its view)
    unlabeled_student_view: str = "teacher"
    labels: str = "given"  # given | none: train on the unlabeled pool only, the teacher's zero-shot as target

    @property
    def workers(self) -> int:  # num_workers, but never more processes than CPUs this process may run on
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return min(self.num_workers, cpus)

    def __post_init__(self) -> None:
        _one_of(self.name, "data.name", DATASET_NAMES)
        _one_of(self.interpolation, "data.interpolation", ("bilinear", "bicubic", "nearest"))
        _check(0.0 < self.val_fraction < 1.0, "data.val_fraction", "must be in (0, 1)")
        _check(self.input_size >= 16, "data.input_size", "must be at least 16")
        _check(self.resize_size >= self.input_size, "data.resize_size", "must be >= data.input_size")
        _check(0.0 < self.crop_scale_min <= 1.0, "data.crop_scale_min", "must be in (0, 1]")
        _one_of(self.mix, "data.mix", ("none", "mixup", "cutmix"))
        _check(0.0 <= self.mix_prob <= 1.0, "data.mix_prob", "must be in [0, 1]")
        _check(self.mix_alpha > 0.0, "data.mix_alpha", "must be > 0")
        _check(self.batch_size >= 1, "data.batch_size", "must be >= 1")
        _check(self.eval_batch_size >= 1, "data.eval_batch_size", "must be >= 1")
        _check(self.num_workers >= 0, "data.num_workers", "must be >= 0")
        _check(self.unlabeled_ratio > 0, "data.unlabeled_ratio", "must be > 0")
        _check(0.0 < self.unlabeled_crop_scale_min <= 1.0, "data.unlabeled_crop_scale_min", "must be in (0, 1]")
        _one_of(self.unlabeled_student_view, "data.unlabeled_student_view", ("teacher", "fresh"))
        _one_of(self.labels, "data.labels", ("given", "none"))
        _check(self.labels == "given" or bool(self.unlabeled), "data.labels",
               "none trains on unlabeled images only: give them with data.unlabeled=<folder or list file>")
        _check(all(s > 0 for s in self.std), "data.std", "every value must be > 0")
        for p in self.prompts:
            _check("{}" in p, "data.prompts", f"template {p!r} has no '{{}}' for the class name")


DATASET_NAMES = ("cub", "imagefolder", "aircraft", "flowers102", "pets", "dtd", "food101")


@dataclass(frozen=True)
class TeacherConfig:
    """The frozen open_clip teacher."""

    enabled: bool = True  # false: the CE-only baseline with the same recipe
    # open_clip registry name, hf-hub:org/repo, local-dir:PATH, or a model config JSON file
    model: str = "convnext_xxlarge"
    pretrained: str = "laion2b_s34b_b82k_augreg_soup"  # open_clip tag, local file, or "none"
    # auto: the teacher's embeddings are built once (or reused) at <train.out_dir>/teacher-cache/<fingerprint>/ and
    # training never runs the teacher | online: the teacher runs on every step (a fresh view every epoch) | a folder
    cache: str = "auto"
    cache_views: int = 8  # K augmented views per training image stored in the cache (the views a KD run sees)
    cache_seed: int = 0  # seed of the cached views: one cache serves every train.seed and student
    cache_batch_size: int = 256  # teacher batch size when building the cache
    cache_shard_size: int = 512  # images per cache shard (the unit of resume and of work per rank)
    unlabeled_views: int = 1  # K views per unlabeled image in the cache (a pool is large: few views)

    def __post_init__(self) -> None:
        _check(bool(self.cache.strip()), "teacher.cache", "is empty: leave it out (auto: a cache keyed by the setup, "
               "built once), or pass teacher.cache=online (the teacher on every step) or teacher.cache=<folder>")
        _check(self.cache_views >= 1, "teacher.cache_views", "must be >= 1 (the cached views per training image); "
               "to run the teacher on every step instead, a fresh view every epoch, pass teacher.cache=online")
        _check(self.cache_batch_size >= 1, "teacher.cache_batch_size", "must be >= 1")
        _check(self.cache_shard_size >= 1, "teacher.cache_shard_size", "must be >= 1")
        _check(self.unlabeled_views >= 1, "teacher.unlabeled_views", "must be >= 1")


@dataclass(frozen=True)
class StudentConfig:
    """The lightweight student that is deployed."""

    arch: str = "resnet18"
    weights: str = "imagenet"  # imagenet | none | path to a torchvision state_dict file


def _term_defaults() -> dict[str, float]:
    """``name`` -> default weight of every registered KD term: ``MethodConfig.weights``, keys ``method.w_<name>``."""
    return {t.name: t.default_weight for t in registered_terms()}


@dataclass(frozen=True)
class MethodConfig:
    """VL2Lite loss hyper-parameters and the dynamic weighting schedule."""

    temperature: float = 2.0
    logit_scale: float = 1.0 / 0.07
    schedule: str = "linear"  # linear | reference | constant
    w_cls_start: float = 0.0  # linear/constant: weight of the CE term at epoch 0
    w_cls_end: float = 1.0  # linear: weight of the CE term once the ramp ends
    ramp_fraction: float = 1.0  # linear: the ramp spans this fraction of the epochs
    # method.w_<name>: the weight of each registered KD term inside the KD half of the loss (distill.loss_terms),
    # e.g. w_vis (the visual term) and w_ling (the linguistic term), 1.0 unless set; (name, weight) pairs
    weights: tuple[tuple[str, float], ...] = field(default=(), metadata={"flat": ("w_", _term_defaults)})
    visual: str = "l1"  # l1: the paper's L1(norm(h), norm(M_img(t))) | projected: 1 - cos(M_s(h), t)
    linguistic: str = "condensed"  # condensed: q from norm(h)·A (paper) | classifier: q from the student's logits
    anchors: str = "text"  # text: the class prompts (paper) | calibrated: fitted on the teacher's train embeddings
    calibration_strengths: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03, 0.01)  # candidates, chosen on val
    calibration_min_per_class: int = 3  # fewer training images in some class: text anchors, with a warning
    w_unlabeled: float = 3.0  # weight of the KD terms on the unlabeled batch (data.unlabeled); 3 beat 1 and 10 on dev
    # data.labels=none: the zero-shot target's class prior: balanced (a per-class bias fitted so the teacher's mean
    # prediction over the unlabeled pool is uniform) | prompts (the prompts' own prior)
    zero_shot_prior: str = "balanced"
    # self-training, round 2: the best.pt of a student of this task (an earlier run with the pool) whose
    # predictions on the unlabeled images join the teacher's class target there: (1 − α)·teacher + α·student
    pool_student: str = ""
    pool_student_weight: float = 0.5  # α, the earlier student's share of that target

    def __post_init__(self) -> None:
        _one_of(self.schedule, "method.schedule", ("linear", "reference", "constant"))
        _one_of(self.visual, "method.visual", ("l1", "projected"))
        _one_of(self.anchors, "method.anchors", ("text", "calibrated"))
        _one_of(self.linguistic, "method.linguistic", ("condensed", "classifier"))
        _one_of(self.zero_shot_prior, "method.zero_shot_prior", ("balanced", "prompts"))
        _check_weights(dict(self.weights))
        object.__setattr__(self, "weights", tuple(self.term_weights().items()))  # every term, defaults filled in
        _check(self.w_unlabeled >= 0, "method.w_unlabeled", "must be >= 0")
        _check(0.0 <= self.pool_student_weight <= 1.0, "method.pool_student_weight", "must be in [0, 1]")
        _check(len(self.calibration_strengths) > 0 and all(v > 0 for v in self.calibration_strengths),
               "method.calibration_strengths", "must be a non-empty list of values > 0")
        _check(self.calibration_min_per_class >= 1, "method.calibration_min_per_class", "must be >= 1")
        _check(self.temperature > 0, "method.temperature", "must be > 0")
        _check(self.logit_scale > 0, "method.logit_scale", "must be > 0")
        _check(0.0 <= self.w_cls_start <= 1.0, "method.w_cls_start", "must be in [0, 1]")
        _check(0.0 <= self.w_cls_end <= 1.0, "method.w_cls_end", "must be in [0, 1]")
        _check(0.0 < self.ramp_fraction <= 1.0, "method.ramp_fraction", "must be in (0, 1]")

    def term_weights(self) -> dict[str, float]:
        """``{name: w}`` for every registered KD term: the configured weight, else the term's default."""
        given = dict(self.weights)
        return {t.name: float(given.get(t.name, t.default_weight)) for t in registered_terms()}


def _check_weights(given: dict[str, float]) -> None:
    names = [t.name for t in registered_terms()]
    for name, value in given.items():
        _check(name in names, f"method.w_{name}", f"no loss term {name!r} is registered (terms: {', '.join(names)})")
        _check(value >= 0, f"method.w_{name}", "must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, checkpoints and logging."""

    epochs: int = 300
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    scheduler: str = "step"  # step | cosine (stepped per epoch) | cosine_steps (set every step) | none
    step_size: int = 30
    gamma: float = 0.5
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    out_dir: str = "runs"
    name: str = ""  # run folder name; empty: the config file's stem
    resume: bool = False  # continue from <out_dir>/<name>/last.pt
    # best.pt: auto (last below 200 validation images, else best_val) | best_val (the epoch with the best
    # val top-1) | last (the final epoch)
    select: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _one_of(self.select, "train.select", ("auto", "best_val", "last"))
        _one_of(self.optimizer, "train.optimizer", ("adamw", "sgd"))
        _one_of(self.scheduler, "train.scheduler", ("step", "cosine", "cosine_steps", "none"))
        _check(self.lr > 0, "train.lr", "must be > 0")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(self.step_size >= 1, "train.step_size", "must be >= 1")
        _check(0 < self.gamma <= 1, "train.gamma", "must be in (0, 1]")
        ok = self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        _check(ok, "train.device", f"{self.device!r} is not auto, cpu, cuda or cuda:N")


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------- loading

def load_config(path: str | Path | None, overrides: Iterable[str] | Mapping[str, Any] = ()) -> Config:
    """Read a YAML file (or the defaults when ``path`` is None) and apply dotted overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file {path} not found: pass an existing YAML file, e.g. configs/demo.yaml")
        raw = read_yaml_text(path) or {}
        if not isinstance(raw, dict):
            raise UserError(f"config file {path} must hold a mapping of sections, not {type(raw).__name__}")
    items = overrides.items() if isinstance(overrides, Mapping) else (split_override(o) for o in overrides)
    for key, value in items:
        set_dotted(raw, key, value)
    cfg = from_dict(Config, raw)
    if not cfg.train.name and path is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, name=Path(path).stem))
    return cfg


def with_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """``cfg`` with dotted ``key: value`` overrides applied, checked as strictly as a config file."""
    raw = to_dict(cfg)
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    return from_dict(Config, raw)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
