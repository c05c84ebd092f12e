"""VL2Lite losses (Jang et al., "VL2Lite: Task-Specific Knowledge Distillation from Large
Vision-Language Models to Lightweight Networks", CVPR 2025), as pure functions of tensors.

Notation (DESIGN.md section 3): B images, C classes, student width d, teacher width D.
``h`` student features (B×d), ``ĥ = norm(h)``; ``t`` teacher image embeddings (B×D, unit norm);
``T`` class text embeddings (C×D, unit norm); ``a = norm(M_img(t))`` (B×d);
``A = norm(M_txt(T))`` (C×d); τ the temperature; s the fixed logit scale (1/0.07).
"""
from __future__ import annotations

import math

from typing import Mapping

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_cls = CE(logits, y) = mean_b −log softmax(logits_b)[y_b].  logits (B, C), labels (B,)."""
    return F.cross_entropy(logits, labels)


def mixed_classification_loss(logits: torch.Tensor, y: torch.Tensor, y2: torch.Tensor,
                              lam: torch.Tensor) -> torch.Tensor:
    """L_cls of blended views (mixup/cutmix) = 1/B Σ_b [λ_b CE(z_b, y_b) + (1 − λ_b) CE(z_b, y2_b)].

    logits (B, C); y, y2 (B,) the own and partner labels; lam (B,) the own share (1: plain CE).
    """
    ce = F.cross_entropy(logits, y, reduction="none")  # (B,)
    ce2 = F.cross_entropy(logits, y2, reduction="none")  # (B,)
    return (lam * ce + (1.0 - lam) * ce2).mean()


def visual_kd_loss(h_norm: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """L_vis = L1(ĥ, a) = 1/(B·d) Σ_b Σ_j |ĥ_bj − a_bj|.  Both (B, d)."""
    return F.l1_loss(h_norm, a)


def projected_kd_loss(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """L_vis (projected) = 1/B Σ_b (1 − cos(p_b, t_b)), with p = M_s(h) the student's features
    projected into the teacher's space (B, D) and t the teacher's embeddings (B, D).

    The target is the frozen teacher itself, so, unlike the paper's L1 against a condensed
    (trainable) target, this term cannot be lowered by moving the target.
    """
    return (1.0 - F.cosine_similarity(p, t, dim=-1)).mean()


def with_second_teacher(log_p: torch.Tensor, z2: torch.Tensor | None, weight: float,
                        temperature: float) -> torch.Tensor:
    """log p' with p' = (1 − α) · p + α · softmax(z2 / τ): the teacher's distribution p (given as log p, (B, C))
    mixed with a second teacher's, a student of an earlier round whose logits z2 (B, C) were computed once
    (``method.pool_student``; self-training, Xie et al., "Self-training with Noisy Student", CVPR 2020).
    The two err on different images, so their mixture is right more often than either. z2 None or α = 0: log p.
    """
    if z2 is None or weight == 0.0:
        return log_p
    log_q2 = F.log_softmax(z2.float() / temperature, dim=-1)  # (B, C)
    if weight == 1.0:
        return log_q2
    parts = torch.stack([log_p + math.log(1.0 - weight), log_q2 + math.log(weight)])  # (2, B, C)
    return torch.logsumexp(parts, dim=0)


def linguistic_kd_loss(t: torch.Tensor, T: torch.Tensor, h_norm: torch.Tensor, A: torch.Tensor,
                       temperature: float, scale: float, z2: torch.Tensor | None = None,
                       z2_weight: float = 0.0) -> torch.Tensor:
    """L_ling = τ² · 1/B Σ_b KL(p_b ‖ q_b), with the teacher's zero-shot distribution as target:

        p_b = softmax(s · t_b Tᵀ / τ)     (teacher image vs. class prompts, (B, C))
        q_b = softmax(s · ĥ_b Aᵀ / τ)     (student features vs. condensed prompts, (B, C))
        KL(p ‖ q) = Σ_c p_c (log p_c − log q_c)

    ``batchmean`` reduction (sum over classes, mean over the batch), unlike the reference code's
    ``mean`` times C/2. ``z2`` (B, C): a second teacher's logits mixed into p (``with_second_teacher``).
    """
    log_p = with_second_teacher(F.log_softmax(scale * t @ T.t() / temperature, dim=-1), z2, z2_weight,
                                temperature)  # (B, C)
    log_q = F.log_softmax(scale * h_norm @ A.t() / temperature, dim=-1)  # (B, C)
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
    return temperature ** 2 * kl


def classifier_kd_loss(t: torch.Tensor, T: torch.Tensor, logits: torch.Tensor, temperature: float,
                       scale: float, bias: torch.Tensor | None = None, z2: torch.Tensor | None = None,
                       z2_weight: float = 0.0) -> torch.Tensor:
    """L_ling (classifier) = τ² · 1/B Σ_b KL(p_b ‖ softmax(z_b / τ)), p_b = softmax((s · t_b Tᵀ + β) / τ):
    the teacher's distribution over the classes distilled into the deployed classifier's logits
    z (B, C) (Hinton et al., 2015) instead of into a side head.  t (B, D), T (C, D); β (C,) an optional
    per-class bias on the teacher's logits (the class prior fitted on unlabeled images, ``balance_prior``);
    ``z2`` (B, C) a second teacher's logits mixed into p (``with_second_teacher``).
    """
    teacher_logits = scale * t @ T.t()  # (B, C)
    if bias is not None:
        teacher_logits = teacher_logits + bias
    log_p = with_second_teacher(F.log_softmax(teacher_logits / temperature, dim=-1), z2, z2_weight,
                                temperature)  # (B, C)
    log_q = F.log_softmax(logits / temperature, dim=-1)  # (B, C)
    return temperature ** 2 * F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def kd_sum(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """Σ_k w_k · L_k over the KD terms k, in their order (the paper's: w_vis · L_vis + w_ling · L_ling)."""
    total = None
    for name, value in terms.items():
        total = weights[name] * value if total is None else total + weights[name] * value
    assert total is not None, "at least one KD term is registered"
    return total


def vl2lite_loss(l_cls: torch.Tensor, kd: Mapping[str, torch.Tensor], weights: Mapping[str, float],
                 w_cls: float) -> torch.Tensor:
    """L = w_cls · L_cls + (1 − w_cls) · Σ_k w_k · L_k / 2 over the KD terms k (``distill.loss_terms``).

    The paper: L_vis and L_ling with w_vis = w_ling = 1, the KD half their mean. The /2 stays fixed
    whatever the number of terms, so a new term at weight 0 leaves every loss as it was.
    """
    return w_cls * l_cls + (1.0 - w_cls) * kd_sum(kd, weights) / 2


def unlabeled_kd_loss(kd_u: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """L_u = Σ_k w_k · L_k(u) / 2: VL2Lite's KD half on an unlabeled batch u (no label, so no CE), each term on
    the very view the teacher embedded. A step with a labeled batch b and an unlabeled batch u minimises
    L(b) + w_u · L_u (``method.w_unlabeled``); with no labels, L_u alone.
    """
    return kd_sum(kd_u, weights) / 2


def w_cls_schedule(epoch: int, epochs: int, kind: str, start: float = 0.0, end: float = 1.0,
                   ramp_fraction: float = 1.0) -> float:
    """Weight of the classification term at ``epoch`` (0-based); the KD weight is 1 − w_cls.

    - ``reference``: clip(epoch / (8 · epochs), 0, 1), the VL2Lite code's formula (reaches 0.125);
    - ``linear``: start + (end − start) · clip(epoch / (ramp_fraction · epochs), 0, 1);
    - ``constant``: start.
    """
    if kind == "reference":
        return min(max(epoch / (8 * epochs), 0.0), 1.0)
    if kind == "linear":
        progress = min(max(epoch / (ramp_fraction * epochs), 0.0), 1.0)
        return start + (end - start) * progress
    if kind == "constant":
        return start
    raise ValueError(f"unknown schedule {kind!r}: use linear, reference or constant")


def cosine_factor(progress: float) -> float:
    """The learning rate's factor at ``progress`` in [0, 1] of the run: ½ · (1 + cos(π · progress))
    (``train.scheduler=cosine_steps``: set every step, where ``cosine`` steps once per epoch)."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
