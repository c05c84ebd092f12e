"""Teacher diagnostics and the task-calibrated teacher (beyond the paper).

VL2Lite's linguistic term distils the teacher's *zero-shot* distribution over the class prompts.
On data unlike web captions zero-shot can be near chance while the teacher's image embeddings
still separate the classes well (a linear probe on them is far better). Calibration keeps the
paper's form but fits the class anchors to the task before distillation:

    T' = argmin_W  CE(s · t · norm(W)ᵀ, y) + λ · 1/C Σ_c ‖norm(W_c) − T_c‖²,   W initialised at T

over the teacher's cached embeddings ``t`` of the training split (every cached view), with the
prompt embeddings ``T`` as the prior and λ (the strength) chosen on the validation split among
``method.calibration_strengths`` and the uncalibrated prompts. Everything here works on tensors
of embeddings, so it costs seconds even for large datasets.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from distill.config import MethodConfig

log = logging.getLogger(__name__)


@dataclass
class TeacherEmbeddings:
    """The teacher's view of the task: train (N, K, D), val (N_val, D), text anchors (C, D).

    ``train_plain`` (N, K) marks the views that show their image alone; blended views (``data.mix``)
    carry two classes and are left out of calibration and the probe. None: every view is plain.
    """

    train: torch.Tensor
    train_labels: torch.Tensor  # (N,)
    val: torch.Tensor
    val_labels: torch.Tensor  # (N_val,)
    text: torch.Tensor
    train_plain: torch.Tensor | None = None  # (N, K) bool

    def to(self, device: torch.device) -> "TeacherEmbeddings":
        """On the training device: calibration and the probe then run on the GPU when there is one."""
        plain = None if self.train_plain is None else self.train_plain.to(device)
        return TeacherEmbeddings(*(x.to(device) for x in (self.train, self.train_labels, self.val,
                                                          self.val_labels, self.text)), plain)

    def flat_train(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, D) embeddings and (M,) labels: every plain view is a training row (M ≤ N·K)."""
        n, k, d = self.train.shape
        t, y = self.train.reshape(n * k, d), self.train_labels.repeat_interleave(k)
        if self.train_plain is None:
            return t, y
        keep = self.train_plain.reshape(n * k)
        return t[keep], y[keep]


@dataclass
class Calibration:
    """The anchors the linguistic term uses, and how they were chosen (stored in results.json)."""

    anchors: torch.Tensor  # (C, D) unit rows
    choice: str  # "text" | "calibrated"
    strength: float | None  # λ of the chosen anchors; None: the prompts themselves
    candidates: list[dict] = field(default_factory=list)  # per candidate: strength, val top-1, val loss
    reason: str = ""


def top1(t: torch.Tensor, y: torch.Tensor, anchors: torch.Tensor) -> float:
    """Nearest-anchor accuracy: mean_b [argmax_c t_b·A_c == y_b].  t (B, D), anchors (C, D)."""
    return float((t @ anchors.t()).argmax(dim=1).eq(y).float().mean())


def anchor_loss(t: torch.Tensor, y: torch.Tensor, anchors: torch.Tensor, scale: float) -> float:
    return float(F.cross_entropy(scale * t @ anchors.t(), y))


def fit_anchors(t: torch.Tensor, y: torch.Tensor, text: torch.Tensor, strength: float, scale: float,
                steps: int = 100) -> torch.Tensor:
    """T' = argmin_W CE(s·t·norm(W)ᵀ, y) + λ·mean_c ‖norm(W_c) − T_c‖², from W = T.  Returns (C, D) unit rows."""
    W = text.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([W], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        A = F.normalize(W, dim=-1)  # (C, D)
        loss = F.cross_entropy(scale * t @ A.t(), y) + strength * (A - text).pow(2).sum(dim=1).mean()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return F.normalize(W.detach(), dim=-1)


def calibrate(emb: TeacherEmbeddings, method: MethodConfig) -> Calibration:
    """The anchors for ``method.anchors``: the prompts, or the calibrated candidate best on val."""
    text = F.normalize(emb.text, dim=-1)
    if method.anchors == "text":
        return Calibration(text, "text", None, reason="method.anchors=text (the paper)")
    counts = torch.bincount(emb.train_labels.cpu(), minlength=text.shape[0])
    if int(counts.min()) < method.calibration_min_per_class or len(emb.val) == 0:
        worst = int(counts.argmin())
        reason = (f"too few training images to calibrate (class {worst} has {int(counts[worst])}, "
                  f"method.calibration_min_per_class={method.calibration_min_per_class}): text anchors used")
        log.warning(reason)
        return Calibration(text, "text", None, reason=reason)
    t, y = emb.flat_train()
    s = method.logit_scale
    best_score = _score(emb, text, None, s)
    best = Calibration(text, "text", None, [best_score])
    for strength in sorted(method.calibration_strengths, reverse=True):  # strongest prior first: wins ties
        anchors = fit_anchors(t, y, text, strength, s)
        score = _score(emb, anchors, strength, s)
        best.candidates.append(score)
        if _key(score) > _key(best_score):
            best_score, best.anchors, best.choice, best.strength = score, anchors, "calibrated", strength
    best.reason = ("calibrated anchors were best on validation" if best.choice == "calibrated"
                   else "no calibrated candidate beat the prompts on validation: text anchors used")
    return best


def balance_prior(t: torch.Tensor, anchors: torch.Tensor, scale: float, iters: int = 200) -> torch.Tensor:
    """The per-class bias β (C,) that makes the teacher's mean prediction over unlabeled images uniform:

        1/N Σ_n softmax(s · t_n Aᵀ + β) = 1/C,   by the fixed point β ← β − log(C · mean_n softmax(s · t_n Aᵀ + β))

    (Sinkhorn's column step, as in self-labelling, Asano et al., ICLR 2020; MUST's fairness term, Li et
    al., ICLR 2023, asks the same of the student). Without labels it is the one thing unlabeled images
    can say about the task: zero-shot prompts often favour a few classes (on Fashion-MNIST one class
    takes 71% of the pool). t (N, D) unit rows, anchors (C, D); assumes roughly balanced classes.
    """
    logits = scale * t @ anchors.t()  # (N, C)
    bias = torch.zeros(anchors.shape[0], device=t.device, dtype=logits.dtype)
    for _ in range(iters):
        mean = torch.softmax(logits + bias, dim=1).mean(dim=0)  # (C,)
        bias = bias - torch.log(mean * anchors.shape[0])
    return bias - bias.mean()  # softmax ignores a common shift: centred


def _score(emb: TeacherEmbeddings, anchors: torch.Tensor, strength: float | None, scale: float) -> dict:
    return {"strength": strength, "val_top1": top1(emb.val, emb.val_labels, anchors),
            "val_loss": anchor_loss(emb.val, emb.val_labels, anchors, scale)}


def _key(score: dict) -> tuple[float, float]:
    return score["val_top1"], -score["val_loss"]  # accuracy first, then the validation loss


def linear_probe(emb: TeacherEmbeddings, weight_decays: tuple[float, ...] = (1e-4, 1e-3, 1e-2),
                 steps: int = 100) -> dict:
    """Multinomial logistic regression on the train embeddings; weight decay chosen on val."""
    t, y = emb.flat_train()
    num_classes = emb.text.shape[0]
    best = {"val_top1": -1.0}
    for wd in weight_decays:
        W, b = _fit_probe(t, y, num_classes, wd, steps)
        acc = float((emb.val @ W + b).argmax(dim=1).eq(emb.val_labels).float().mean())
        if acc > best["val_top1"]:
            best = {"val_top1": acc, "weight_decay": wd, "weight": W, "bias": b}
    return best


def _fit_probe(t: torch.Tensor, y: torch.Tensor, num_classes: int, wd: float, steps: int):
    W = torch.zeros(t.shape[1], num_classes, device=t.device, requires_grad=True)  # (D, C)
    b = torch.zeros(num_classes, device=t.device, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=steps, line_search_fn="strong_wolfe")
    scale = 10.0  # unit-norm inputs: a fixed gain keeps the problem well conditioned

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(scale * t @ W + b, y) + wd * W.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return scale * W.detach(), b.detach()


def diagnostics(emb: TeacherEmbeddings, calibration: Calibration, requested: str = "text") -> dict:
    """The teacher's own numbers on the validation split, stored in results.json before epoch 1;
    ``requested``: the run's ``method.anchors`` (its warnings advise only what the run does not do yet)."""
    num_classes = emb.text.shape[0]
    zero_shot = top1(emb.val, emb.val_labels, F.normalize(emb.text, dim=-1))
    probe = linear_probe(emb)
    out = {
        "val_images": len(emb.val), "chance": 1.0 / num_classes,
        "zero_shot_val_top1": zero_shot,
        "calibrated_val_top1": top1(emb.val, emb.val_labels, calibration.anchors),
        "linear_probe_val_top1": probe["val_top1"], "linear_probe_weight_decay": probe["weight_decay"],
        "anchors": calibration.choice, "calibration_strength": calibration.strength,
        "calibration_candidates": calibration.candidates, "calibration_reason": calibration.reason,
        "warnings": [],
    }
    if zero_shot < 2.0 / num_classes and calibration.choice == "text":
        fix = ("use method.anchors=calibrated or better data.prompts" if requested == "text" else
               f"method.anchors=calibrated kept the prompts ({calibration.reason}); better data.prompts would help")
        out["warnings"].append(
            f"the teacher's zero-shot top-1 on validation is {100 * zero_shot:.1f}%, near chance "
            f"({100 / num_classes:.1f}%): its class prompts do not describe this data, so the paper's "
            f"linguistic term distils a wrong distribution; {fix}")
    elif zero_shot < 2.0 / num_classes:  # this run already distils the calibrated anchors: say how good they are
        out["warnings"].append(
            f"the teacher's zero-shot top-1 on validation is {100 * zero_shot:.1f}%, near chance "
            f"({100 / num_classes:.1f}%): its class prompts do not describe this data; this run's calibrated "
            f"anchors reach {100 * out['calibrated_val_top1']:.1f}% (better data.prompts would help the zero-shot "
            f"figure only)")
    return out
