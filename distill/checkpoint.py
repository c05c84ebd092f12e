"""Checkpoints: the deployable student artifact (``best.pt``) and the resumable state (``last.pt``).

The student artifact (schema ``vl2lite-student`` version 1, a dict of plain types and tensors that
loads with ``torch.load(weights_only=True)``; teacher weights are never written) is documented and
checked by ``formats.checkpoint``; ``students.checkpoint`` reads it back.

``last.pt`` additionally holds the condensation layers, optimizer, scheduler, RNG state and
the epoch counter under ``train_state``.
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from formats.checkpoint import SCHEMA, SCHEMA_VERSION
from formats.files import atomic_write
from students.registry import Student


def library_versions() -> dict[str, str]:
    import torchvision
    versions = {"python": platform.python_version(), "torch": str(torch.__version__),
                "torchvision": str(torchvision.__version__)}
    try:
        import open_clip
        versions["open_clip"] = str(open_clip.__version__)
    except ImportError:
        pass
    return versions


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(obj, f))


def student_artifact(student: Student, arch: str, class_names: list[str], preprocessing: dict, dataset: dict,
                     config: dict, metrics: dict, epoch: int) -> dict[str, Any]:
    """The checkpoint dict; ``formats.checkpoint`` documents and checks it."""
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "arch": arch, "num_classes": len(class_names), "class_names": list(class_names),
        "feature_dim": student.feature_dim,
        "state_dict": {k: v.detach().cpu() for k, v in student.state_dict().items()},
        "preprocessing": preprocessing, "dataset": dataset, "config": config, "metrics": metrics, "epoch": epoch,
        "versions": library_versions(),
    }
