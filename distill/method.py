"""VL2Lite's trainable parts besides the student: the two condensation MLPs, and the step loss.

The condensation layers map teacher embeddings (width D) to the student width d; they are
trained with the student and discarded at export.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.config import MethodConfig
from distill.losses import classification_loss, linguistic_kd_loss, visual_kd_loss, vl2lite_loss
from distill.students import Student


def condenser(teacher_dim: int, student_dim: int) -> nn.Sequential:
    """Linear(D→d) → ReLU → Linear(d→d)."""
    return nn.Sequential(nn.Linear(teacher_dim, student_dim), nn.ReLU(inplace=True),
                         nn.Linear(student_dim, student_dim))


class Condensation(nn.Module):
    """M_img for teacher image embeddings and M_txt for the (fixed) class text embeddings."""

    def __init__(self, text_embeddings: torch.Tensor, student_dim: int) -> None:
        super().__init__()
        teacher_dim = text_embeddings.shape[1]
        self.image = condenser(teacher_dim, student_dim)
        self.text = condenser(teacher_dim, student_dim)
        self.register_buffer("text_embeddings", text_embeddings.clone())  # T, (C, D)

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = F.normalize(self.image(t), dim=-1)  # (B, d)
        A = F.normalize(self.text(self.text_embeddings), dim=-1)  # (C, d)
        return a, A


def step_losses(student: Student, heads: Condensation | None, x: torch.Tensor, y: torch.Tensor,
                t: torch.Tensor | None, method: MethodConfig, w_cls: float) -> dict[str, torch.Tensor]:
    """All loss terms of one batch; ``heads``/``t`` None is the teacher-off baseline (CE only)."""
    h = student.features(x)  # (B, d)
    logits = student.classifier(h)  # (B, C), on the unnormalised features
    l_cls = classification_loss(logits.float(), y)
    if heads is None or t is None:
        return {"loss": l_cls, "cls": l_cls, "logits": logits}
    h_norm = F.normalize(h.float(), dim=-1)
    a, A = heads(t.float())
    l_vis = visual_kd_loss(h_norm, a.float())
    l_ling = linguistic_kd_loss(t.float(), heads.text_embeddings.float(), h_norm, A.float(),
                                method.temperature, method.logit_scale)
    return {"loss": vl2lite_loss(l_cls, l_vis, l_ling, w_cls), "cls": l_cls, "vis": l_vis,
            "ling": l_ling, "logits": logits}
