"""The registry of KD loss terms: each declares its name, its weight key and its formula.

A term is a pure function of one batch (``TermInputs``) with its formula in the docstring. Every
registered term is computed on every KD batch and enters the loss with the weight
``method.w_<name>`` (``distill.config.MethodConfig`` accepts that key for every registered term):

    L   = w_cls · L_cls + (1 − w_cls) · Σ_k w_k · L_k / 2      (labeled batch, ``losses.vl2lite_loss``)
    L_u = Σ_k w_k · L_k(u) / 2                                 (unlabeled batch, ``losses.unlabeled_kd_loss``)

and is logged as ``train_<name>`` (``train_<name>_u`` on the unlabeled batch) in metrics.jsonl.
VL2Lite's two terms (``vis``, ``ling``) are ``distill.terms.vl2lite``; a new term is one new
module: in ``distill/terms/`` (found by the package), or elsewhere and imported before the
config is loaded. Give it ``default_weight=0`` and existing configs keep their loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from distill.heads import Condensation


@dataclass(frozen=True)
class TermInputs:
    """One batch as every KD term sees it: float32 tensors, the trainable heads and the method's KD settings."""

    h: torch.Tensor  # (B, d) the student's unnormalised features
    h_norm: torch.Tensor  # (B, d) ĥ = norm(h)
    logits: torch.Tensor  # (B, C) the student's logits W h
    t: torch.Tensor  # (B, D) the teacher's image embeddings (unit norm)
    heads: Condensation  # M_img / M_txt / M_s, the anchors T (C, D) and the class bias β (C,)
    temperature: float  # τ (method.temperature)
    logit_scale: float  # s (method.logit_scale)
    visual: str  # method.visual: l1 | projected
    linguistic: str  # method.linguistic: condensed | classifier
    z2: torch.Tensor | None = None  # (B, C) a second teacher's logits (method.pool_student), unlabeled batch only
    z2_weight: float = 0.0  # α, its share of the class target (method.pool_student_weight)


@dataclass(frozen=True)
class LossTerm:
    name: str  # metric train_<name>; weight key method.w_<name>
    formula: Callable[[TermInputs], torch.Tensor]  # a pure function, its formula in its docstring; a scalar
    default_weight: float = 1.0  # method.w_<name> when a config does not set it

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name.endswith("_u"):
            raise ValueError(f"loss term name {self.name!r} must be an identifier not ending in _u (the "
                             f"unlabeled batch's suffix)")
        if self.default_weight < 0:
            raise ValueError(f"loss term {self.name!r}: default_weight must be >= 0")

    @property
    def weight_key(self) -> str:
        return f"w_{self.name}"


_TERMS: dict[str, LossTerm] = {}


def register_term(term: LossTerm) -> LossTerm:
    """Add ``term``; a name registered twice is an error."""
    if term.name in _TERMS:
        raise ValueError(f"loss term {term.name!r} is already registered")
    _TERMS[term.name] = term
    return term


def registered_terms() -> tuple[LossTerm, ...]:
    """Every registered term, in registration order (the order of the metrics and of the sum)."""
    return tuple(_TERMS.values())
