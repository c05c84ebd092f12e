"""VL2Lite's trainable parts besides the student: the condensation MLPs (and the projection head).

The condensation layers map teacher embeddings (width D) to the student width d; they are
trained with the student and discarded at export. The loss terms that use them are
``distill.terms``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
