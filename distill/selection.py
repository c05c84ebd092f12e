"""Which epoch ``best.pt`` keeps (``train.select``), and the line that says so before epoch 1."""
from __future__ import annotations

import sys

from distill.config import Config

NOISY_VAL_IMAGES = 200  # below this, one validation image is worth more than half a point of top-1


def selection(cfg: Config, val_images: int) -> str:
    """Which epoch best.pt keeps: ``train.select``, ``auto`` resolved by the validation split's size (below
    ``NOISY_VAL_IMAGES`` the best epoch on it is largely noise: the final one); without labels validation
    only measures, so the final epoch."""
    if cfg.data.labels == "none":
        return "last"
    if cfg.train.select == "auto":
        return "last" if val_images < NOISY_VAL_IMAGES else "best_val"
    return cfg.train.select


def warn_noisy_selection(cfg: Config, val_images: int, classes: int) -> None:
    """Say which epoch ``auto`` keeps; warn when an explicit best_val picks an epoch by noise on a tiny split."""
    if cfg.train.select == "auto" and cfg.train.progress and cfg.data.labels == "given":
        kept = ("the final epoch" if selection(cfg, val_images) == "last" else "the epoch with the best validation "
                "top-1")
        print(f"best.pt keeps {kept} (train.select=auto, {val_images} validation images; below {NOISY_VAL_IMAGES} "
              f"the best epoch on them is largely noise)", file=sys.stderr)
    elif selection(cfg, val_images) == "best_val" and 0 < val_images < NOISY_VAL_IMAGES:
        print(f"warning: the validation split has {val_images} images ({val_images / classes:.1f} per class), so "
              f"one image moves its top-1 by {100 / val_images:.1f} points and the best epoch on it is largely "
              f"noise; train.select=auto (the default: the final epoch below {NOISY_VAL_IMAGES} validation images) "
              f"or train.select=last keeps the final epoch instead", file=sys.stderr)
