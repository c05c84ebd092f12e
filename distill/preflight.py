"""Before any work: everything a run needs that is not here, found at once and reported together.

A run may need, from the network: the teacher's weights (an open_clip tag, ``hf-hub:``; a
``local-dir:`` folder must exist), each student's ImageNet weights (its family's
``missing_weights``: torchvision's and timm's caches), and a torchvision dataset that
``data.download`` would fetch. ``preflight`` checks all of them without loading any, and raises ONE
``UserError`` listing every missing item with the file to fetch, where to put it and the offline
alternative, instead of failing on the first one minutes in and on the next one after the fix.

The teacher is needed only when its targets must be computed: online, a cache still to build, or
``data.labels=none`` (its zero-shot is measured at the end); a complete cache needs no teacher.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from distill.cache_ready import Inputs, is_complete, run_inputs, uses_cache, with_cache_folder
from distill.config import Config
from distill.pool_student import missing_pool_student
from distill.teacher import teacher_problem
from formats.datasets import TORCHVISION_DATASETS
from formats.errors import UserError, one_line
from formats.network import reachable
from students.registry import check_arch, missing_weights


def preflight(cfg: Config, students: Sequence[str] | None = None, verbose: bool = False) -> Inputs:
    """The run's dataset splits and unlabeled pool, once every file the run needs (for the students
    ``students``, default ``student.arch``; ``()``: none, e.g. building the cache) is known to be here or
    downloadable; else one error listing all."""
    students = (cfg.student.arch,) if students is None else tuple(students)
    for arch in students:
        check_arch(arch)  # a typo is its own error, at once
    inputs, problems = _inputs(cfg, verbose)
    if cfg.teacher.enabled and teacher_needed(cfg, inputs):
        problems.append(teacher_problem(cfg.teacher.model, cfg.teacher.pretrained))
    problems += [missing_weights(arch, cfg.student.weights) for arch in students]
    if students:  # a training run: the second teacher it reads before epoch 1 (distill.pool_student)
        problems.append(missing_pool_student(cfg))
    found = [p for p in problems if p]
    if len(found) == 1:
        raise UserError(found[0])
    if found:
        listed = "\n".join(f"  {i}. {p}" for i, p in enumerate(found, 1))
        raise UserError(f"this run needs {len(found)} thing(s) that are not here (nothing was started; "
                        f"fix them all, then run the same command):\n{listed}")
    assert inputs is not None  # no problem: the dataset loaded
    return inputs


def check_names(cfg: Config) -> None:
    """The student's name and the keys that only work together, before any data is read."""
    check_arch(cfg.student.arch)
    if cfg.data.labels == "none" and not cfg.teacher.enabled:
        raise UserError("data.labels=none learns from the teacher alone: set teacher.enabled=true")
    if cfg.data.labels == "none" and cfg.method.linguistic != "classifier":
        raise UserError("data.labels=none trains the deployed classifier from the teacher's class distribution "
                        "alone: set method.linguistic=classifier")
    if cfg.data.unlabeled and not cfg.teacher.enabled:
        raise UserError("data.unlabeled needs the teacher (it teaches on the unlabeled images): set "
                        "teacher.enabled=true, or drop data.unlabeled for the CE-only baseline")
    if cfg.method.pool_student and not cfg.data.unlabeled:
        raise UserError("method.pool_student teaches on the unlabeled images beside the teacher: give them with "
                        "data.unlabeled=<folder or list file>, or drop method.pool_student")


def teacher_needed(cfg: Config, inputs: Inputs | None) -> bool:
    """Whether the run loads the teacher: online, with a cache still to build, or to measure its zero-shot."""
    if not uses_cache(cfg) or inputs is None or cfg.data.labels == "none":
        return True
    return not is_complete(with_cache_folder(cfg, inputs[0]), inputs)


def _inputs(cfg: Config, verbose: bool) -> tuple[Inputs | None, list[str | None]]:
    """(splits and pool, or None), and the dataset's problem: a torchvision set that is not under data.root
    and that data.download cannot fetch offline, or any other reason it does not load."""
    data, host = cfg.data, _download_host(cfg.data.name) if cfg.data.download else None
    offline = host is not None and not reachable(host)
    if offline:  # what is there already loads without the network
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(data, download=False))
    try:
        return run_inputs(cfg, verbose), []
    except UserError as exc:
        if offline:
            return None, [f"dataset {data.name} is not under {data.root} and data.download=true cannot reach {host}: "
                          f"run once with data.download=true on a machine with internet and copy {data.root} here"]
        return None, [one_line(exc)]


def _download_host(name: str) -> str | None:
    """The host torchvision downloads dataset ``name`` from (None: not a torchvision set)."""
    entry = TORCHVISION_DATASETS.get(name)
    if entry is None:
        return None
    import torchvision.datasets

    cls = getattr(torchvision.datasets, entry.cls)
    urls = " ".join(str(getattr(cls, a)) for a in ("_URL", "_download_url_prefix", "_RESOURCES") if hasattr(cls, a))
    found = re.search(r"https?://([^/'\"]+)", urls)
    return found.group(1) if found else None
