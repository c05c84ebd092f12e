"""VL2Lite's two KD terms (Jang et al., CVPR 2025), registered in the paper's order: ``vis``, ``ling``.

Notation (DESIGN.md section 3): ``h`` student features (B×d), ``ĥ = norm(h)``; ``t`` teacher image
embeddings (B×D); ``T`` the anchors (C×D); ``a = norm(M_img(t))`` (B×d); ``A = norm(M_txt(T))`` (C×d);
τ the temperature, s the logit scale. Each term picks its form from the method's settings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.loss_terms import LossTerm, TermInputs, register_term
from distill.losses import classifier_kd_loss, linguistic_kd_loss, projected_kd_loss, visual_kd_loss


def visual_term(x: TermInputs) -> torch.Tensor:
    """L_vis (``method.visual``):

    - ``l1`` (the paper): L1(ĥ, a) = 1/(B·d) Σ_b Σ_j |ĥ_bj − a_bj|, a = norm(M_img(t));
    - ``projected``: 1/B Σ_b (1 − cos(M_s(h)_b, t_b)).
    """
    if x.visual == "l1":
        return visual_kd_loss(x.h_norm, F.normalize(x.heads.image(x.t), dim=-1))  # a, (B, d)
    return projected_kd_loss(x.heads.project(x.h), x.t)  # M_s(h), (B, D)


def linguistic_term(x: TermInputs) -> torch.Tensor:
    """L_ling (``method.linguistic``), with p_b = softmax(s · t_b Tᵀ / τ) the teacher's zero-shot distribution:

    - ``condensed`` (the paper): τ² · 1/B Σ_b KL(p_b ‖ softmax(s · ĥ_b Aᵀ / τ));
    - ``classifier``: τ² · 1/B Σ_b KL(p'_b ‖ softmax(z_b / τ)), z the logits,
      p'_b = softmax((s · t_b Tᵀ + β) / τ) with β the class bias.

    On the unlabeled batch with ``method.pool_student``, either target becomes (1 − α) · p + α · softmax(z2 / τ).
    """
    anchors = x.heads.text_embeddings.float()  # T, (C, D)
    if x.linguistic == "classifier":
        return classifier_kd_loss(x.t, anchors, x.logits, x.temperature, x.logit_scale, x.heads.anchor_bias.float(),
                                  x.z2, x.z2_weight)
    return linguistic_kd_loss(x.t, anchors, x.h_norm, x.heads.condensed_text().float(), x.temperature, x.logit_scale,
                              x.z2, x.z2_weight)


register_term(LossTerm("vis", visual_term))
register_term(LossTerm("ling", linguistic_term))
