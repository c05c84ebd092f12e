"""The loss of one training step: CE on the labeled batch, every registered KD term (``distill.terms``)
on the labeled and the unlabeled batch, weighted as ``distill.loss_terms`` describes."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.config import MethodConfig
from distill.heads import Condensation
from distill.loss_terms import TermInputs, registered_terms
from distill.losses import classification_loss, mixed_classification_loss, unlabeled_kd_loss, vl2lite_loss
from students.registry import Student


def step_losses(student: Student, heads: Condensation | None, x: torch.Tensor | None, y: torch.Tensor | None,
                t: torch.Tensor | None, method: MethodConfig, w_cls: float, y2: torch.Tensor | None = None,
                lam: torch.Tensor | None = None, x_u: torch.Tensor | None = None,
                t_u: torch.Tensor | None = None, z2_u: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """All loss terms of one step (``loss``, ``cls``, each KD term, each KD term ``_u`` on the unlabeled batch);
    ``heads``/``t`` None is the teacher-off baseline (CE only).

    ``y2``/``lam`` (B,): blended views' partner labels and own shares (``data.mix``); None: no blends.
    ``x_u`` (B_u, 3, S, S) / ``t_u`` (B_u, D): an unlabeled batch and the teacher's embeddings of the
    very views it shows (``data.unlabeled``); it adds ``w_unlabeled · L_u`` (``unlabeled_kd_loss``).
    ``z2_u`` (B_u, C): an earlier student's logits on those images (``method.pool_student``), mixed into
    the class target of the unlabeled batch; None: the teacher's alone.
    ``x`` None (``data.labels=none``): the unlabeled batch alone, ``L = L_u``. Both batches go through
    the student in one forward (one set of batch-norm statistics, one pass for DDP).
    """
    n = 0 if x is None else len(x)
    parts = [v for v in (x, x_u) if v is not None]
    h_all = student.features(parts[0] if len(parts) == 1 else torch.cat(parts))  # (B + B_u, d)
    logits_all = student.classifier(h_all)  # (B + B_u, C), on the unnormalised features
    out: dict[str, torch.Tensor] = {}
    if n:
        out = _labeled_losses(heads, h_all[:n], logits_all[:n], y, t, method, w_cls, y2, lam)
    if x_u is not None and heads is not None and t_u is not None:
        kd_u = kd_terms(heads, h_all[n:], logits_all[n:], t_u, method, z2_u)
        l_u = unlabeled_kd_loss(kd_u, method.term_weights())
        out["loss"] = out["loss"] + method.w_unlabeled * l_u if n else l_u
        out.update({f"{name}_u": value for name, value in kd_u.items()})
    return out


def _labeled_losses(heads: Condensation | None, h: torch.Tensor, logits: torch.Tensor, y: torch.Tensor,
                    t: torch.Tensor | None, method: MethodConfig, w_cls: float, y2: torch.Tensor | None,
                    lam: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """VL2Lite on the labeled batch: h (B, d), logits (B, C), y (B,), t (B, D) or None (CE only)."""
    if y2 is None or lam is None:
        l_cls = classification_loss(logits.float(), y)
    else:
        l_cls = mixed_classification_loss(logits.float(), y, y2, lam)
    if heads is None or t is None:
        return {"loss": l_cls, "cls": l_cls}
    kd = kd_terms(heads, h, logits, t, method)
    return {"loss": vl2lite_loss(l_cls, kd, method.term_weights(), w_cls), "cls": l_cls, **kd}


def kd_terms(heads: Condensation, h: torch.Tensor, logits: torch.Tensor, t: torch.Tensor,
             method: MethodConfig, z2: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``{name: L_k}`` for every registered KD term: h (B, d) student features, logits (B, C), t (B, D) teacher
    embeddings, z2 (B, C) a second teacher's logits or None."""
    h32 = h.float()
    batch = TermInputs(h32, F.normalize(h32, dim=-1), logits.float(), t.float(), heads, method.temperature,
                       method.logit_scale, method.visual, method.linguistic, z2,
                       method.pool_student_weight if z2 is not None else 0.0)
    return {term.name: term.formula(batch) for term in registered_terms()}


class Trainable(nn.Module):
    """Student + condensation layers as one module, so DDP sees a single forward per step."""

    def __init__(self, student: Student, heads: Condensation | None, method: MethodConfig) -> None:
        super().__init__()
        self.student, self.heads, self.method = student, heads, method

    def forward(self, x: torch.Tensor | None, y: torch.Tensor | None, t: torch.Tensor | None, w_cls: float,
                y2: torch.Tensor | None = None, lam: torch.Tensor | None = None, x_u: torch.Tensor | None = None,
                t_u: torch.Tensor | None = None, z2_u: torch.Tensor | None = None):
        return step_losses(self.student, self.heads, x, y, t, self.method, w_cls, y2, lam, x_u, t_u, z2_u)
