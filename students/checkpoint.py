"""Read a student checkpoint file: safely (weights_only), metadata checked, weights matched to the arch."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from formats.checkpoint import StudentMeta
from formats.errors import UserError, refusal_reason
from students.registry import Student, create_student


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], StudentMeta]:
    """The checkpoint dict (tensors included) and its checked metadata; a pickle is never executed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found: pass the best.pt written by `python -m distill`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError (truncated zip), ...
        raise UserError(
            f"checkpoint {path} cannot be loaded safely: it is corrupt, truncated, or a pickle that "
            f"would run code (refused, never executed) [{refusal_reason(exc)}]; re-export it from a distill run"
        ) from None
    return ckpt, StudentMeta.from_checkpoint(ckpt, str(path))


def load_student(path: str | Path) -> tuple[Student, StudentMeta]:
    """The student (eval mode, CPU) and its metadata, from ``best.pt`` or ``last.pt``."""
    ckpt, meta = read_checkpoint(path)
    student = create_student(meta.arch, meta.num_classes, weights="none")
    if student.feature_dim != meta.feature_dim:
        raise UserError(f"{path}: feature_dim {meta.feature_dim} does not match {meta.arch} "
                        f"({student.feature_dim}): the checkpoint was edited or mislabelled; re-run training")
    try:
        student.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError) as exc:  # missing / unexpected keys, wrong shapes
        first = str(exc).strip().splitlines()
        detail = " ".join(ln.strip() for ln in first[:2])[:300]
        raise UserError(f"{path}: its weights do not fit a {meta.arch} with {meta.num_classes} classes "
                        f"({detail}): pass an unmodified checkpoint written by `python -m distill`") from None
    return student.eval(), meta
