"""VL2Lite's trainable parts besides the student: the two condensation MLPs, and the step loss.

The condensation layers map teacher embeddings (width D) to the student width d; they are
trained with the student and discarded at export.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.config import MethodConfig
from distill.losses import (classification_loss, classifier_kd_loss, linguistic_kd_loss, mixed_classification_loss,
                            projected_kd_loss, unlabeled_kd_loss, visual_kd_loss, vl2lite_loss)
from students.registry import Student


def condenser(teacher_dim: int, student_dim: int) -> nn.Sequential:
    """Linear(D→d) → ReLU → Linear(d→d)."""
    return nn.Sequential(nn.Linear(teacher_dim, student_dim), nn.ReLU(inplace=True),
                         nn.Linear(student_dim, student_dim))


class Condensation(nn.Module):
    """The trainable heads besides the student, discarded at export.

    - ``text``: M_txt condenses the class anchors (C, D) to the student width (``linguistic=condensed``);
    - ``image``: M_img condenses the teacher embedding to the student width (``visual=l1``, the paper);
    - ``project``: M_s projects the student features into the teacher's space (``visual=projected``).

    ``text_embeddings`` holds the anchors of the linguistic target: the class prompts (paper) or the
    calibrated anchors (``distill.calibrate``).
    """

    def __init__(self, text_embeddings: torch.Tensor, student_dim: int, visual: str = "l1",
                 linguistic: str = "condensed") -> None:
        super().__init__()
        teacher_dim = text_embeddings.shape[1]
        self.visual = visual
        # Only the heads the losses use are built (DDP refuses unused parameters), in the paper's
        # order (M_img, then M_txt), so the paper's method initialises exactly as it always did.
        if visual == "l1":
            self.image = condenser(teacher_dim, student_dim)
        if linguistic == "condensed":
            self.text = condenser(teacher_dim, student_dim)
        if visual == "projected":
            self.project = nn.Sequential(nn.Linear(student_dim, student_dim), nn.ReLU(inplace=True),
                                         nn.Linear(student_dim, teacher_dim))
        self.register_buffer("text_embeddings", text_embeddings.clone())  # T, (C, D)
        # β (C,): the class prior of the classifier term's target (data.labels=none; zeros otherwise). Not saved:
        # setup fits it again from the same cache, so a resumed run and an older last.pt load alike.
        self.register_buffer("anchor_bias", torch.zeros(text_embeddings.shape[0]), persistent=False)

    def condensed_text(self) -> torch.Tensor:
        return F.normalize(self.text(self.text_embeddings), dim=-1)  # A, (C, d)

    def visual_loss(self, h: torch.Tensor, h_norm: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.visual == "l1":
            return visual_kd_loss(h_norm, F.normalize(self.image(t), dim=-1))  # a = norm(M_img(t)), (B, d)
        return projected_kd_loss(self.project(h), t)  # M_s(h), (B, D)


def step_losses(student: Student, heads: Condensation | None, x: torch.Tensor | None, y: torch.Tensor | None,
                t: torch.Tensor | None, method: MethodConfig, w_cls: float, y2: torch.Tensor | None = None,
                lam: torch.Tensor | None = None, x_u: torch.Tensor | None = None,
                t_u: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """All loss terms of one step; ``heads``/``t`` None is the teacher-off baseline (CE only).

    ``y2``/``lam`` (B,): blended views' partner labels and own shares (``data.mix``); None: no blends.
    ``x_u`` (B_u, 3, S, S) / ``t_u`` (B_u, D): an unlabeled batch and the teacher's embeddings of the
    very views it shows (``data.unlabeled``); it adds ``w_unlabeled · L_u`` (``unlabeled_kd_loss``).
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
        l_vis_u, l_ling_u = kd_terms(heads, h_all[n:], logits_all[n:], t_u, method)
        l_u = unlabeled_kd_loss(l_vis_u, l_ling_u, method.w_vis, method.w_ling)
        out["loss"] = out["loss"] + method.w_unlabeled * l_u if n else l_u
        out.update(vis_u=l_vis_u, ling_u=l_ling_u)
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
    l_vis, l_ling = kd_terms(heads, h, logits, t, method)
    loss = vl2lite_loss(l_cls, l_vis, l_ling, w_cls, method.w_vis, method.w_ling)
    return {"loss": loss, "cls": l_cls, "vis": l_vis, "ling": l_ling}


def kd_terms(heads: Condensation, h: torch.Tensor, logits: torch.Tensor, t: torch.Tensor,
             method: MethodConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_vis, L_ling) of a batch: h (B, d) student features, logits (B, C), t (B, D) teacher embeddings."""
    h32, t = h.float(), t.float()
    h_norm = F.normalize(h32, dim=-1)
    l_vis = heads.visual_loss(h32, h_norm, t)
    if method.linguistic == "classifier":
        l_ling = classifier_kd_loss(t, heads.text_embeddings.float(), logits.float(), method.temperature,
                                    method.logit_scale, heads.anchor_bias.float())
    else:
        l_ling = linguistic_kd_loss(t, heads.text_embeddings.float(), h_norm, heads.condensed_text().float(),
                                    method.temperature, method.logit_scale)
    return l_vis, l_ling
