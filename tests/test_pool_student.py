"""Self-training round 2 (method.pool_student): an earlier student's predictions join the teacher's target."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import distill.method as method_mod
from distill.config import MethodConfig, with_overrides
from distill.config_parse import from_dict
from distill.data import load_dataset
from distill.evaluate import predicted_logits
from distill.heads import Condensation
from distill.losses import classifier_kd_loss, linguistic_kd_loss, with_second_teacher
from distill.method import kd_terms, step_losses
from distill.pool import load_pool
from distill.pool_student import pool_student_logits
from distill.preflight import check_names
from distill.train import fit
from formats.errors import UserError
from students.checkpoint import load_student
from students.registry import create_student
from tests.test_unlabeled import POOL_B, POOL_BU, POOL_IMAGES, pooled, records_of, splits  # noqa: F401 - fixtures

C, TAU = 4, 2.0


@pytest.fixture(scope="module")
def round_one(pooled):
    """best.pt of a one-epoch run with the pool: the earlier student of round 2."""
    return fit(with_overrides(pooled["cfg"], {"train.name": "round1", "train.epochs": 1}))


def test_with_second_teacher_is_the_log_of_the_mixture_of_both_distributions():
    torch.manual_seed(0)
    log_p, z2 = F.log_softmax(torch.randn(5, C), dim=-1), 3 * torch.randn(5, C)
    q = F.softmax(z2 / TAU, dim=-1)
    for alpha in (0.25, 0.5, 0.9):
        got = with_second_teacher(log_p, z2, alpha, TAU)
        assert torch.allclose(got.exp(), (1 - alpha) * log_p.exp() + alpha * q, atol=1e-6)
        assert torch.allclose(got.logsumexp(dim=-1), torch.zeros(5), atol=1e-6)  # a distribution
    assert torch.equal(with_second_teacher(log_p, z2, 0.0, TAU), log_p)
    assert torch.equal(with_second_teacher(log_p, None, 0.5, TAU), log_p)
    assert torch.allclose(with_second_teacher(log_p, z2, 1.0, TAU), q.log(), atol=1e-6)
    # a confident second teacher never yields -inf where the teacher gives mass (no NaN in the KL)
    extreme = with_second_teacher(log_p, torch.tensor([[1e4, -1e4, -1e4, -1e4]] * 5), 0.5, TAU)
    assert torch.isfinite(extreme).all()


def test_both_linguistic_forms_distil_the_mixed_target():
    torch.manual_seed(1)
    t, T = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(C, 8), dim=-1)
    logits, z2, alpha, s = torch.randn(6, C), 4 * torch.randn(6, C), 0.4, 14.0
    mixed = (1 - alpha) * F.softmax(s * t @ T.t() / TAU, dim=-1) + alpha * F.softmax(z2 / TAU, dim=-1)  # (6, C)

    def kd(log_q):
        return TAU ** 2 * (mixed * (mixed.log() - log_q)).sum(1).mean()

    got = classifier_kd_loss(t, T, logits, TAU, s, None, z2, alpha)
    assert torch.allclose(got, kd(F.log_softmax(logits / TAU, dim=-1)), atol=1e-5)
    h, A = F.normalize(torch.randn(6, 5), dim=-1), F.normalize(torch.randn(C, 5), dim=-1)
    got = linguistic_kd_loss(t, T, h, A, TAU, s, z2, alpha)
    assert torch.allclose(got, kd(F.log_softmax(s * h @ A.t() / TAU, dim=-1)), atol=1e-5)
    assert not torch.allclose(got, linguistic_kd_loss(t, T, h, A, TAU, s), atol=1e-3)


def test_the_second_teacher_changes_only_the_unlabeled_class_term():
    torch.manual_seed(0)
    student = create_student("resnet18", C, "none").eval()
    heads = Condensation(F.normalize(torch.randn(C, 16), dim=-1), student.feature_dim, "l1", "classifier")
    x, y, t = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 1, 2]), F.normalize(torch.randn(4, 16), dim=-1)
    x_u, t_u, z2_u = torch.randn(3, 3, 32, 32), F.normalize(torch.randn(3, 16), dim=-1), 5 * torch.randn(3, C)
    method = from_dict(MethodConfig, {"linguistic": "classifier", "pool_student_weight": 0.5})
    plain = step_losses(student, heads, x, y, t, method, 0.4, x_u=x_u, t_u=t_u)
    both = step_losses(student, heads, x, y, t, method, 0.4, x_u=x_u, t_u=t_u, z2_u=z2_u)
    for key in ("cls", "vis", "ling", "vis_u"):
        assert torch.allclose(both[key], plain[key], atol=1e-6), key
    assert not torch.allclose(both["ling_u"], plain["ling_u"], atol=1e-3)
    h = student.features(x_u)
    want = kd_terms(heads, h, student.classifier(h), t_u, method, z2_u)["ling"]
    assert torch.allclose(both["ling_u"], want, atol=1e-5)


def test_round_two_trains_on_the_round_one_students_logits_of_each_pool_image(pooled, splits, round_one,
                                                                              monkeypatch):
    cfg = with_overrides(pooled["cfg"], {"train.name": "round2", "method.pool_student": str(round_one),
                                         "method.pool_student_weight": 0.5})
    pool = load_pool(cfg.data, splits, verbose=False)
    student, meta = load_student(round_one)
    expected = predicted_logits(student, pool.source, meta.preprocessing.to_dict(), torch.device("cpu"), 50, 0)
    assert expected.shape == (POOL_IMAGES, len(splits.class_names))
    assert torch.allclose(pool_student_logits(cfg, splits.class_names, pool, torch.device("cpu"), False), expected,
                          atol=1e-5)
    seen, real = [], method_mod.step_losses

    def recording(student, heads, x, y, t, method, w_cls, y2=None, lam=None, x_u=None, t_u=None, z2_u=None):
        if student.training:
            assert z2_u is not None and len(z2_u) == len(x_u) == POOL_BU and len(x) == POOL_B
            seen.append(z2_u.detach().clone())
        return real(student, heads, x, y, t, method, w_cls, y2, lam, x_u, t_u, z2_u)

    monkeypatch.setattr(method_mod, "step_losses", recording)
    best = fit(cfg)
    assert len(seen) == 2 * 3  # 2 epochs of 3 pool batches, each with its images' round-1 logits
    for epoch in (seen[:3], seen[3:]):
        rows = torch.cat(epoch)  # (9, C): each the logits of one pool image, no image twice in a pass
        match = torch.cdist(rows, expected).argmin(dim=1)
        assert torch.allclose(rows, expected[match], atol=1e-5)
        assert len(set(match.tolist())) == len(rows)
    assert all(math.isfinite(r["train_ling_u"]) for r in records_of(best.parent))


def test_pool_student_errors_name_the_key_and_the_fix(pooled, splits, round_one, tmp_path):
    from distill.preflight import preflight

    with pytest.raises(UserError, match="method.pool_student .*gone.pt does not exist"):  # before any work
        preflight(with_overrides(pooled["cfg"], {"method.pool_student": str(tmp_path / "gone.pt")}))
    with pytest.raises(UserError, match="method.pool_student .*data.unlabeled"):
        check_names(with_overrides(pooled["cfg"], {"data.unlabeled": "", "method.pool_student": "x.pt"}))
    with pytest.raises(UserError, match="method.pool_student_weight"):
        with_overrides(pooled["cfg"], {"method.pool_student_weight": 1.5})
    pool = load_pool(pooled["cfg"].data, splits, verbose=False)
    missing = with_overrides(pooled["cfg"], {"method.pool_student": str(tmp_path / "none.pt")})
    with pytest.raises(UserError, match="method.pool_student .*none.pt does not exist"):
        pool_student_logits(missing, splits.class_names, pool, torch.device("cpu"))
    other = with_overrides(pooled["cfg"], {"method.pool_student": str(round_one)})
    renamed = [f"other {n}" for n in splits.class_names]
    with pytest.raises(UserError, match="trained on other classes"):
        pool_student_logits(other, renamed, pool, torch.device("cpu"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be loaded safely"):
        pool_student_logits(with_overrides(pooled["cfg"], {"method.pool_student": str(corrupt)}),
                            splits.class_names, pool, torch.device("cpu"))


def test_compare_trains_round_two_on_the_round_one_run_of_the_same_seed(pooled):
    from distill.compare import compare
    from formats.run_results import read_run_record

    cfg = with_overrides(pooled["cfg"], {"train.name": "rounds", "train.epochs": 1})
    root = Path(cfg.train.out_dir) / "rounds"
    arms = {"kd+unlabeled": {}, "round2": {"method.pool_student": str(root / "kd+unlabeled-seed{seed}" / "best.pt")}}
    summary = compare(cfg, [1], arms)
    assert set(summary["arms"]) == {"kd+unlabeled", "round2"}
    recorded = read_run_record(root / "round2-seed1").plain_config()["method"]["pool_student"]
    assert recorded == str(root / "kd+unlabeled-seed1" / "best.pt")
