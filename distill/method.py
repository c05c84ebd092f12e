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
                            projected_kd_loss, visual_kd_loss, vl2lite_loss)
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

    def condensed_text(self) -> torch.Tensor:
        return F.normalize(self.text(self.text_embeddings), dim=-1)  # A, (C, d)

    def visual_loss(self, h: torch.Tensor, h_norm: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.visual == "l1":
            return visual_kd_loss(h_norm, F.normalize(self.image(t), dim=-1))  # a = norm(M_img(t)), (B, d)
        return projected_kd_loss(self.project(h), t)  # M_s(h), (B, D)


def step_losses(student: Student, heads: Condensation | None, x: torch.Tensor, y: torch.Tensor,
                t: torch.Tensor | None, method: MethodConfig, w_cls: float, y2: torch.Tensor | None = None,
                lam: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """All loss terms of one batch; ``heads``/``t`` None is the teacher-off baseline (CE only).

    ``y2``/``lam`` (B,): blended views' partner labels and own shares (``data.mix``); None: no blends.
    """
    h = student.features(x)  # (B, d)
    logits = student.classifier(h)  # (B, C), on the unnormalised features
    if y2 is None or lam is None:
        l_cls = classification_loss(logits.float(), y)
    else:
        l_cls = mixed_classification_loss(logits.float(), y, y2, lam)
    if heads is None or t is None:
        return {"loss": l_cls, "cls": l_cls, "logits": logits}
    h32, t = h.float(), t.float()
    h_norm = F.normalize(h32, dim=-1)
    l_vis = heads.visual_loss(h32, h_norm, t)
    if method.linguistic == "classifier":
        l_ling = classifier_kd_loss(t, heads.text_embeddings.float(), logits.float(), method.temperature,
                                    method.logit_scale)
    else:
        l_ling = linguistic_kd_loss(t, heads.text_embeddings.float(), h_norm, heads.condensed_text().float(),
                                    method.temperature, method.logit_scale)
    loss = vl2lite_loss(l_cls, l_vis, l_ling, w_cls, method.w_vis, method.w_ling)
    return {"loss": loss, "cls": l_cls, "vis": l_vis, "ling": l_ling, "logits": logits}
