"""The one accuracy budget every artifact of a bundle is held to, and the records it leaves.

``Budget`` is the rule (``manifest.json``'s ``budget``); ``BudgetVerdict`` its outcome for one
artifact (an artifact's ``budget``), which the runtime and the sweep read (``within_budget``);
``Parity`` the logit comparison against PyTorch; ``Selected`` the figures where an INT8 recipe
was chosen. Nested records of the manifest (``formats.manifest``): its ``schema_version`` versions them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BudgetVerdict:
    """One artifact against the budget, on the split it was judged on."""

    split: str  # "val" when the figures are reported on test (the verdict stays unbiased), else the evaluation split
    images: int
    top1_drop: float  # percentage points below the PyTorch student on ``split``
    agreement: float  # fraction of ``split`` whose top-1 equals PyTorch's
    within_budget: bool


@dataclass(frozen=True)
class Budget:
    """The one accuracy rule every artifact of a bundle is held to (FP32, FP16, INT8, engines).

    An artifact is within budget when, on the judged split, its top-1 is at most ``max_top1_drop``
    points below the PyTorch student's and its top-1 agrees with PyTorch's on at least
    ``min_agreement`` of the images. The judged split is validation when the bundle reports test
    figures (INT8 recipes are chosen on it, so test stays unbiased), else the evaluation split.
    """

    max_top1_drop: float  # percentage points
    min_agreement: float  # fraction of images, 0..1

    def coarseness(self, split: str, images: int) -> str | None:
        """A warning when one image of the judged split moves top-1 by more than the budget allows:
        the verdict can then only read 0, 1, 2 ... images, and a drop of one image already misses."""
        step = 100.0 / max(images, 1)  # points of top-1 per image
        if step <= self.max_top1_drop:
            return None
        return (f"WARNING: the accuracy budget is judged on {images} {split} images, where one image is {step:.2f} "
                f"points of top-1, more than the budget's {self.max_top1_drop:g}: a single changed prediction "
                f"misses it; train with a larger data.val_fraction (at least {math.ceil(100 / self.max_top1_drop)} "
                f"{split} images) or pass a --max-top1-drop of at least {step:.2f}")

    def verdict(self, split: str, images: int, top1_drop: float, agreement: float) -> BudgetVerdict:
        """The manifest's ``budget`` entry of one artifact."""
        within = top1_drop <= self.max_top1_drop and agreement >= self.min_agreement
        return BudgetVerdict(split, images, round(top1_drop, 4), round(agreement, 6), within)


@dataclass(frozen=True)
class Parity:
    """An artifact's logits against PyTorch's on the first ``images`` evaluation images."""

    max_abs_logit_diff: float
    top1_agreement: float  # fraction
    images: int


@dataclass(frozen=True)
class Selected:
    """Where an INT8 graph was chosen, and its figures there (the budget's verdict is taken on them)."""

    split: str
    images: int
    top1: float  # a fraction
    top1_drop: float  # points below PyTorch
    agreement: float
