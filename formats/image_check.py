"""Decode every image of a dataset once, in parallel, and report every unreadable file together.

A corrupt or missing file otherwise surfaces mid-epoch, after minutes or hours of work, and
one at a time. ``python -m distill check`` runs this alone; training runs it before epoch 1
(``data.check_images``). Decoding happens in threads: Pillow releases the GIL while it decodes.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping

from formats.errors import UserError, one_line

SHOWN = 10  # unreadable files listed in the error (the check command prints all of them)


@dataclass
class CheckReport:
    images: int = 0
    problems: list[str] = field(default_factory=list)  # "split: message", in split and index order
    seconds: float = 0.0

    def raise_if_bad(self, hint: str) -> None:
        """One UserError naming how many are unreadable, the first ``SHOWN`` of them, and ``hint``."""
        if not self.problems:
            return
        listed = "; ".join(self.problems[:SHOWN]) + (f"; and {len(self.problems) - SHOWN} more"
                                                      if len(self.problems) > SHOWN else "")
        raise UserError(f"{len(self.problems)} of {self.images} images cannot be read: {listed}. {hint}")


def _probe(source: Any, index: int) -> str | None:
    try:
        source.load(index)
    except UserError as exc:
        return one_line(exc)
    except Exception as exc:  # a torchvision dataset's own errors
        return f"{exc.__class__.__name__}: {one_line(exc)}"
    return None


def check_images(splits: Mapping[str, Any], workers: int = 0) -> CheckReport:
    """Load every image of every split (``name -> ImageSource``) once; ``workers`` 0: 2 per core."""
    import time

    start = time.perf_counter()
    jobs = [(name, source, i) for name, source in splits.items() for i in range(len(source))]
    workers = workers or min(32, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda job: _probe(job[1], job[2]), jobs))
    problems = [f"{name}: {msg}" for (name, _, _), msg in zip(jobs, results) if msg]
    return CheckReport(len(jobs), problems, time.perf_counter() - start)
