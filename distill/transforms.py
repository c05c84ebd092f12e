"""Image pipelines: the evaluation transform (the deployment contract) and seeded training views.

The evaluation transform is described by a plain ``preprocessing`` dict that travels with the
checkpoint and the bundle; ``formats.preprocessing`` reproduces it without torch.

Training views are reproducible: the crop and flip of view ``v`` of image ``i`` are a pure function
of ``(seed, i, v)``. The same crop is resized for the student (its size and normalisation) and for
the teacher (its native size and normalisation), so both see the same view; a teacher-embedding
cache can store view ``v`` and the student can replay it later. With ``data.mix``, some views blend
image ``i`` with a partner image (mixup or cutmix), also a pure function of ``(seed, i, v)``: the
teacher's cached embedding is then the embedding of the blend the student is shown, so the two
stay consistent (Beyer et al., "Knowledge distillation: a good teacher is patient and consistent",
CVPR 2022).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

from distill.config import DataConfig
from formats.datasets import ImageSource
from formats.preprocessing import PreprocessSpec

_INTERP = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


def preprocessing_spec(data: DataConfig) -> dict[str, Any]:
    """The evaluation transform as data (``formats.preprocessing``): what the runtime does before the model."""
    return PreprocessSpec(input_size=(data.input_size, data.input_size), resize_size=data.resize_size,
                          interpolation=data.interpolation, mean=tuple(data.mean), std=tuple(data.std)).to_dict()


def eval_transform(pre: dict[str, Any]) -> T.Compose:
    """torchvision transform for a preprocessing spec: resize shorter side, centre crop, normalise."""
    return T.Compose([
        T.Lambda(_to_rgb),
        T.Resize(pre["resize_size"], interpolation=_INTERP[pre["interpolation"]]),
        T.CenterCrop(pre["input_size"]),
        T.ToTensor(),
        T.Normalize(pre["mean"], pre["std"]),
    ])


def _to_rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


@dataclass(frozen=True)
class ViewParams:
    top: int
    left: int
    height: int
    width: int
    flip: bool


@dataclass(frozen=True)
class MixParams:
    """How a view blends its image with a partner: ``lam`` is the own image's share (of the label too)."""

    partner: int  # index of the other image in the same split
    lam: float
    box: tuple[float, float, float, float] | None  # cutmix: (top, left, height, width) as fractions; mixup: None


@dataclass(frozen=True)
class TargetSpec:
    """Where one consumer (student or teacher) wants the view: size, interpolation, normalisation."""

    size: int
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


class ViewSampler:
    """RandomResizedCrop + horizontal flip (+ optional mixup/cutmix) as a pure function of (seed, i, v)."""

    def __init__(self, seed: int, scale: tuple[float, float], hflip: bool,
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), mix: str = "none", mix_prob: float = 0.0,
                 mix_alpha: float = 1.0) -> None:
        self.seed, self.scale, self.ratio, self.hflip = seed, scale, ratio, hflip
        self.mix, self.mix_prob, self.mix_alpha = mix, mix_prob, mix_alpha

    def mix_params(self, index: int, view: int, n: int) -> MixParams | None:
        """Whether view ``view`` of image ``index`` (of ``n``) is a blend, and how; None: the image alone.

        Its own random stream, so the crops of ``params`` are the same with mixing on or off.
        """
        if self.mix == "none" or n < 2:
            return None
        rng = np.random.default_rng([self.seed, index, view, 1])
        if rng.random() >= self.mix_prob:
            return None
        partner = int(rng.integers(n - 1))
        partner += partner >= index  # any other image, never itself
        lam = float(rng.beta(self.mix_alpha, self.mix_alpha))
        if self.mix == "mixup":
            return MixParams(partner, lam, None)
        side = math.sqrt(1.0 - lam)  # cutmix: a square of area 1 - lam from the partner
        top, left = float(rng.uniform(0, 1 - side)), float(rng.uniform(0, 1 - side))
        return MixParams(partner, lam, (top, left, side, side))

    def sample(self, source: ImageSource, index: int, view: int,
               targets: list[TargetSpec]) -> tuple[list[torch.Tensor], int, float]:
        """View ``view`` of image ``index`` for each target: (tensors, partner label, lam).

        Unblended: the image's own label and lam 1, so lam·CE(y) + (1 − lam)·CE(y2) is plain CE.
        """
        img = source.load(index)
        own = [self.render(img, self.params(index, view, *img.size), t) for t in targets]
        mix = self.mix_params(index, view, len(source))
        if mix is None:
            return own, source.labels[index], 1.0
        other = source.load(mix.partner)
        p = self.params(mix.partner, view, *other.size)
        return ([blend(a, self.render(other, p, t), mix) for a, t in zip(own, targets)],
                source.labels[mix.partner], mix.lam)

    def params(self, index: int, view: int, width: int, height: int) -> ViewParams:
        """The same algorithm as torchvision's RandomResizedCrop.get_params, seeded per view."""
        rng = np.random.default_rng([self.seed, index, view])
        flip = bool(self.hflip and rng.random() < 0.5)
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return ViewParams(top, left, h, w, flip)
        return _central_crop(width, height, self.ratio, flip)

    def render(self, img: Image.Image, p: ViewParams, target: TargetSpec) -> torch.Tensor:
        """Crop ``p`` out of ``img`` and prepare it for ``target``: (3, size, size) float tensor."""
        out = F.resized_crop(img, p.top, p.left, p.height, p.width, [target.size, target.size],
                             interpolation=_INTERP[target.interpolation], antialias=True)
        if p.flip:
            out = F.hflip(out)
        return F.normalize(F.to_tensor(out), list(target.mean), list(target.std))


def blend(a: torch.Tensor, b: torch.Tensor, mix: MixParams) -> torch.Tensor:
    """mixup: lam·a + (1 − lam)·b; cutmix: a with ``mix.box`` taken from b.  a, b (3, S, S).

    Both are normalised with the same mean and std, and normalisation is affine, so blending the
    normalised tensors equals normalising the blended pixels.
    """
    if mix.box is None:
        return mix.lam * a + (1.0 - mix.lam) * b
    size = a.shape[-1]
    top, left, h, w = (round(f * size) for f in mix.box)
    out = a.clone()
    out[:, top:top + h, left:left + w] = b[:, top:top + h, left:left + w]
    return out


def view_sampler(data: DataConfig, seed: int) -> ViewSampler:
    """The training views of a data config, seeded by ``seed`` (the cache's seed when cached)."""
    return ViewSampler(seed, (data.crop_scale_min, 1.0), data.hflip, mix=data.mix, mix_prob=data.mix_prob,
                       mix_alpha=data.mix_alpha)


def pool_view_sampler(data: DataConfig, seed: int) -> ViewSampler:
    """The unlabeled pool's views: their own crop range (``data.unlabeled_crop_scale_min``), never blended
    (a blend needs two labels to mean anything to the CE term, and the pool has none)."""
    return ViewSampler(seed, (data.unlabeled_crop_scale_min, 1.0), data.hflip)


def pool_student_sampler(data: DataConfig, seed: int) -> ViewSampler | None:
    """The student's own views of the pool (``data.unlabeled_student_view=fresh``): the labeled crop range,
    never blended; None: the student sees the teacher's view."""
    if data.unlabeled_student_view == "teacher":
        return None
    return ViewSampler(seed, (data.crop_scale_min, 1.0), data.hflip)


def _central_crop(width: int, height: int, ratio: tuple[float, float], flip: bool) -> ViewParams:
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return ViewParams((height - h) // 2, (width - w) // 2, h, w, flip)


def student_target(data: DataConfig) -> TargetSpec:
    return TargetSpec(data.input_size, data.interpolation, tuple(data.mean), tuple(data.std))
