"""The top-1 drop of one model against another on the same images, with its paired 95% interval.

Export (every artifact against the PyTorch student) and the runtime (``bench --data``: every
artifact against the bundle's FP32 model on the device) report drops that must mean the same thing.
"""
from __future__ import annotations

import math

import numpy as np


def paired_drop(ref_right: np.ndarray, right: np.ndarray) -> tuple[float, float]:
    """(drop, half-width of its 95% interval), in points, from per-image correctness (N,) bool each:

        d = (n_lost - n_won) / N,   Var(d) = ((n_lost + n_won) / N - d^2) / N   (paired Wald)

    n_lost: images the reference gets right and the other wrong; n_won: the reverse. The drop is a
    difference of a few flipped images, so it is only as precise as their count: 90 flips in 1,000
    images (a 0.91 agreement) make it +-1.9 points, whatever its value.
    """
    n = len(ref_right)
    if n == 0:
        return 0.0, 0.0
    lost, won = float((ref_right & ~right).sum()), float((~ref_right & right).sum())
    d = (lost - won) / n
    return 100.0 * d, 100.0 * 1.96 * math.sqrt(max((lost + won) / n - d * d, 0.0) / n)
