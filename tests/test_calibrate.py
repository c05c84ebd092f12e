"""The task-calibrated teacher and the teacher diagnostics: pure functions on embeddings."""
import torch
import torch.nn.functional as F

from distill.calibrate import TeacherEmbeddings, calibrate, diagnostics, fit_anchors, linear_probe, top1
from distill.config import MethodConfig


def embeddings(per_class: int, val_per_class: int = 10, classes: int = 4, dim: int = 16, seed: int = 0):
    """Classes are well separated in the image embeddings, but the prompts point elsewhere: a
    teacher whose zero-shot is poor although its features know the classes (the real-data case)."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)

    def draw(n):
        y = torch.arange(classes).repeat_interleave(n)
        return F.normalize(centres[y] + 0.25 * torch.randn(len(y), dim, generator=g), dim=-1), y

    train, y_train = draw(per_class)
    val, y_val = draw(val_per_class)
    text = F.normalize(centres.roll(1, dims=0) + 0.8 * centres, dim=-1)  # prompts lean to the wrong class
    return TeacherEmbeddings(train[:, None], y_train, val, y_val, text)


def test_fit_anchors_moves_the_anchors_towards_the_data_and_the_prior_holds_them():
    emb = embeddings(20)
    t, y = emb.flat_train()
    weak = fit_anchors(t, y, emb.text, strength=0.01, scale=1 / 0.07)
    strong = fit_anchors(t, y, emb.text, strength=100.0, scale=1 / 0.07)
    assert torch.allclose(weak.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert top1(t, y, weak) > top1(t, y, emb.text) + 0.2  # calibration fixes the wrong prompts
    assert (strong - emb.text).norm() < (weak - emb.text).norm()  # a stronger prior stays nearer the prompts


def test_calibration_is_chosen_on_validation():
    emb = embeddings(20)
    method = MethodConfig(anchors="calibrated", calibration_strengths=(10.0, 0.1, 0.01))
    cal = calibrate(emb, method)
    assert cal.choice == "calibrated" and not torch.allclose(cal.anchors, emb.text)
    assert [c["strength"] for c in cal.candidates] == [None, 10.0, 0.1, 0.01]  # the prompts compete too
    best = max(cal.candidates, key=lambda c: (c["val_top1"], -c["val_loss"]))
    assert cal.strength == best["strength"] and top1(emb.val, emb.val_labels, cal.anchors) == best["val_top1"]
    assert best["val_top1"] > cal.candidates[0]["val_top1"]


def test_paper_anchors_and_too_few_images_keep_the_prompts(caplog):
    emb = embeddings(2)
    text_run = calibrate(emb, MethodConfig(anchors="text"))
    assert text_run.choice == "text" and torch.equal(text_run.anchors, F.normalize(emb.text, dim=-1))
    few = calibrate(emb, MethodConfig(anchors="calibrated", calibration_min_per_class=3))
    assert few.choice == "text" and "too few training images" in few.reason and few.strength is None
    assert "too few training images" in caplog.text


def test_diagnostics_report_the_teacher_and_warn_near_chance():
    emb = embeddings(20)
    cal = calibrate(emb, MethodConfig(anchors="calibrated"))
    d = diagnostics(emb, cal)
    assert d["chance"] == 0.25 and d["val_images"] == 40
    assert d["linear_probe_val_top1"] > 0.9 and d["calibrated_val_top1"] > d["zero_shot_val_top1"]
    assert d["zero_shot_val_top1"] < 0.5 and any("near chance" in w for w in d["warnings"])
    assert d["anchors"] == "calibrated" and len(d["calibration_candidates"]) == 6
    # a run that already uses calibrated anchors is told how good they are, not advised to use them
    assert not any("use method.anchors=calibrated" in w for w in d["warnings"])
    assert any(f"calibrated anchors reach {100 * d['calibrated_val_top1']:.1f}%" in w for w in d["warnings"])
    paper = diagnostics(emb, calibrate(emb, MethodConfig(anchors="text")))
    assert any("use method.anchors=calibrated" in w for w in paper["warnings"])


def test_linear_probe_learns_separable_embeddings():
    emb = embeddings(20)
    probe = linear_probe(emb)
    assert probe["val_top1"] > 0.9 and probe["weight"].shape == (16, 4)
