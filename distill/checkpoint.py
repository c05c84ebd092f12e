"""Checkpoints: the deployable student artifact (``best.pt``) and the resumable state (``last.pt``).

Student artifact, schema ``vl2lite-student`` version 1 (a dict of plain types and tensors, so it
loads with ``torch.load(weights_only=True)``; teacher weights are never written)::

    schema, schema_version      "vl2lite-student", 1
    arch                        registered student name, e.g. "resnet18"
    num_classes, class_names    C and the C names in label order
    feature_dim                 d, the width of the student's features
    state_dict                  Student weights (backbone.* and classifier.*)
    preprocessing               distill.transforms.preprocessing_spec(...)
    config                      the resolved run config (nested dict)
    metrics                     {"val": {...}, "test": {...}} (test filled at the end of training)
    epoch                       epoch whose weights these are
    versions                    library versions that produced it

``last.pt`` additionally holds the condensation layers, optimizer, scheduler, RNG state and
the epoch counter under ``train_state``.
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from distill.errors import UserError
from distill.files import atomic_write
from distill.students import Student, create_student

SCHEMA = "vl2lite-student"
SCHEMA_VERSION = 1


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


def student_artifact(student: Student, arch: str, class_names: list[str], preprocessing: dict,
                     config: dict, metrics: dict, epoch: int) -> dict[str, Any]:
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "arch": arch, "num_classes": len(class_names), "class_names": list(class_names),
        "feature_dim": student.feature_dim,
        "state_dict": {k: v.detach().cpu() for k, v in student.state_dict().items()},
        "preprocessing": preprocessing, "config": config, "metrics": metrics, "epoch": epoch,
        "versions": library_versions(),
    }


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (weights_only) and check that it is a student artifact."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found: pass the best.pt written by `python -m distill`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError (truncated zip), ...
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [exc.__class__.__name__]
        reason = next((ln for ln in lines if "Unsupported global" in ln), lines[0])
        raise UserError(
            f"checkpoint {path} cannot be loaded safely: it is corrupt, truncated, or a pickle that "
            f"would run code (refused, never executed) [{reason[:200]}]; re-export it from a distill run"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("schema") != SCHEMA:
        raise UserError(f"{path} is not a student artifact (schema {SCHEMA!r}): "
                        f"pass the best.pt or last.pt written by `python -m distill`")
    if ckpt.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{path} has schema version {ckpt.get('schema_version')}, this toolkit reads "
                        f"{SCHEMA_VERSION}: re-run distill or use the matching toolkit version")
    return ckpt


def load_student(path: str | Path) -> tuple[Student, dict[str, Any]]:
    """The student (eval mode, CPU) and its artifact dict, from ``best.pt`` or ``last.pt``."""
    ckpt = read_checkpoint(path)
    student = create_student(ckpt["arch"], ckpt["num_classes"], weights="none")
    student.load_state_dict(ckpt["state_dict"])
    return student.eval(), ckpt
