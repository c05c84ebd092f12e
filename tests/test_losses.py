"""Loss values against hand computation (plain Python math), and the weighting schedule."""
import math

import pytest
import torch

from distill.losses import (classification_loss, classifier_kd_loss, linguistic_kd_loss, mixed_classification_loss,
                            projected_kd_loss, visual_kd_loss, vl2lite_loss, w_cls_schedule)


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def test_classification_loss_matches_hand_value():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.5, 0.5, 3.0]])
    y = torch.tensor([0, 1])
    hand = (-math.log(softmax([2, 0, 1])[0]) - math.log(softmax([0.5, 0.5, 3])[1])) / 2
    assert classification_loss(logits, y).item() == pytest.approx(hand, rel=1e-6)


def test_mixed_classification_loss_splits_ce_by_lam():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.5, 0.5, 3.0]])
    y, y2 = torch.tensor([0, 1]), torch.tensor([2, 1])
    ones = torch.ones(2)
    assert torch.allclose(mixed_classification_loss(logits, y, y2, ones), classification_loss(logits, y))
    assert torch.allclose(mixed_classification_loss(logits, y, y2, 0 * ones), classification_loss(logits, y2))
    lam = torch.tensor([0.25, 0.5])
    ce = lambda row, c: -math.log(softmax(logits[row].tolist())[c])  # noqa: E731
    hand = (0.25 * ce(0, 0) + 0.75 * ce(0, 2) + 0.5 * ce(1, 1) + 0.5 * ce(1, 1)) / 2
    assert mixed_classification_loss(logits, y, y2, lam).item() == pytest.approx(hand, rel=1e-6)


def test_visual_kd_is_mean_absolute_difference():
    h = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    a = torch.tensor([[0.0, 1.0], [0.8, 0.6]])
    hand = (0.6 + 0.2 + 0.2 + 0.6) / 4
    assert visual_kd_loss(h, a).item() == pytest.approx(hand, rel=1e-6)


def test_linguistic_kd_is_batchmean_kl_times_tau_squared():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # teacher image embeddings (B=2, D=2)
    T = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])  # class text embeddings (C=3, D=2)
    h = torch.tensor([[0.8, 0.6], [0.6, 0.8]])  # normalised student features (B=2, d=2)
    A = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])  # condensed text (C=3, d=2)
    tau, s = 2.0, 1 / 0.07
    kl_sum = 0.0
    for b in range(2):
        p = softmax([s * sum(t[b, k] * T[c, k] for k in range(2)).item() / tau for c in range(3)])
        q = softmax([s * sum(h[b, k] * A[c, k] for k in range(2)).item() / tau for c in range(3)])
        kl_sum += sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q))
    hand = tau ** 2 * kl_sum / 2  # batchmean: sum over classes, mean over the batch
    assert linguistic_kd_loss(t, T, h, A, tau, s).item() == pytest.approx(hand, rel=1e-5)


def test_linguistic_kd_is_zero_when_distributions_match():
    t = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    T = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    assert linguistic_kd_loss(t, T, t, T, 2.0, 14.0).item() == pytest.approx(0.0, abs=1e-6)


def test_total_loss_weights_terms():
    l_cls, kd = torch.tensor(2.0), {"vis": torch.tensor(0.4), "ling": torch.tensor(1.0)}
    assert vl2lite_loss(l_cls, kd, {"vis": 1.0, "ling": 1.0}, 0.25).item() == pytest.approx(0.25 * 2 + 0.75 * 0.7)


def test_total_loss_weights_each_kd_term():
    l_cls, kd = torch.tensor(2.0), {"vis": torch.tensor(0.4), "ling": torch.tensor(1.0)}
    got = vl2lite_loss(l_cls, kd, {"vis": 3.0, "ling": 0.5}, 0.25).item()
    assert got == pytest.approx(0.25 * 2 + 0.75 * (3.0 * 0.4 + 0.5 * 1.0) / 2)
    # the KD half stays the paper's /2 with a third term: at weight 0 it leaves the loss as it was
    three = vl2lite_loss(l_cls, {**kd, "extra": torch.tensor(5.0)}, {"vis": 3.0, "ling": 0.5, "extra": 0.0}, 0.25)
    assert three.item() == pytest.approx(got)


def test_the_registered_terms_are_the_papers_in_order_with_their_weight_keys():
    from distill.config import load_config
    from distill.loss_terms import registered_terms
    load_config(None)  # the config registers the terms of distill/terms/
    terms = registered_terms()
    assert [(t.name, t.weight_key, t.default_weight) for t in terms] == [("vis", "w_vis", 1.0), ("ling", "w_ling", 1.0)]
    assert all(t.formula.__doc__ and "L_" in t.formula.__doc__ for t in terms)  # the formula is documented


def test_projected_kd_is_one_minus_cosine():
    p = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # student projected into the teacher space (B=2, D=2)
    t = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])  # teacher embeddings
    hand = ((1 - 4 / 5) + (1 - (-1))) / 2
    assert projected_kd_loss(p, t).item() == pytest.approx(hand, rel=1e-6)
    assert projected_kd_loss(2 * t, t).item() == pytest.approx(0.0, abs=1e-6)  # scale-free


def test_classifier_kd_distils_the_teacher_into_the_logits():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # teacher image embeddings (B=2, D=2)
    T = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])  # anchors (C=3, D=2)
    z = torch.tensor([[2.0, 1.0, -1.0], [0.0, 0.5, 3.0]])  # student logits (B=2, C=3)
    tau, s = 2.0, 1 / 0.07
    kl_sum = 0.0
    for b in range(2):
        p = softmax([s * sum(t[b, k] * T[c, k] for k in range(2)).item() / tau for c in range(3)])
        q = softmax([z[b, c].item() / tau for c in range(3)])
        kl_sum += sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q))
    assert classifier_kd_loss(t, T, z, tau, s).item() == pytest.approx(tau ** 2 * kl_sum / 2, rel=1e-5)


def test_reference_schedule_reaches_one_eighth():
    assert w_cls_schedule(0, 300, "reference") == 0.0
    assert w_cls_schedule(150, 300, "reference") == pytest.approx(150 / 2400)
    assert w_cls_schedule(300, 300, "reference") == pytest.approx(0.125)


def test_linear_schedule_ramps_and_holds():
    kw = dict(kind="linear", start=0.2, end=0.8, ramp_fraction=0.5)
    assert w_cls_schedule(0, 10, **kw) == pytest.approx(0.2)
    assert w_cls_schedule(2, 10, **kw) == pytest.approx(0.2 + 0.6 * 2 / 5)
    assert w_cls_schedule(5, 10, **kw) == pytest.approx(0.8)
    assert w_cls_schedule(9, 10, **kw) == pytest.approx(0.8)
    assert w_cls_schedule(7, 10, "constant", start=0.3) == 0.3
    with pytest.raises(ValueError):
        w_cls_schedule(1, 10, "cosine")
