"""The tiny open_clip teacher (random weights, built offline): embeddings and loading errors."""
import time

import pytest
import torch
import torch.nn.functional as F

from distill.errors import UserError
from distill.teacher import TINY_TEACHER, Teacher, resolve_weights


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return Teacher(TINY_TEACHER, "none", torch.device("cpu"))


def test_text_embeddings_are_normalised_template_means(teacher):
    names = ["Crimson Finch", "Azure Warbler", "Golden Tanager"]
    templates = ("a photo of {}, a type of bird.", "a close-up photo of a {}.")
    T = teacher.encode_classes(names, templates)
    assert T.shape == (3, teacher.embed_dim) and teacher.embed_dim == 64
    assert torch.allclose(T.norm(dim=-1), torch.ones(3), atol=1e-5)
    # By hand for one class: normalise each prompt's embedding, average, normalise.
    tokens = teacher.tokenizer([t.format(names[1]) for t in templates])
    with torch.no_grad():
        per_prompt = F.normalize(teacher.model.encode_text(tokens).float(), dim=-1)
    assert torch.allclose(T[1], F.normalize(per_prompt.mean(0), dim=-1), atol=1e-5)
    assert not torch.allclose(T[0], T[1])


def test_image_embeddings_at_teacher_resolution(teacher):
    assert teacher.target.size == 32
    t = teacher.encode_images(torch.randn(4, 3, 32, 32))
    assert t.shape == (4, 64) and torch.allclose(t.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())


def test_unknown_model_and_tag():
    with pytest.raises(UserError, match="unknown teacher model 'ViT-B-33'; did you mean"):
        resolve_weights("ViT-B-33", "none")
    with pytest.raises(UserError, match="unknown pretrained tag 'laion9' for ViT-B-32; valid tags: openai"):
        resolve_weights("ViT-B-32", "laion9")
    with pytest.raises(UserError, match="file /no/such/file.pt not found"):
        resolve_weights("ViT-B-32", "/no/such/file.pt")


def test_offline_tag_fails_fast_with_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(UserError, match="not cached and the model hub is unreachable.*teacher.pretrained=<path"):
        resolve_weights("convnext_xxlarge", "laion2b_s34b_b82k_augreg_soup")
    assert time.perf_counter() - start < 5


def test_local_checkpoint_file_loads(tmp_path, teacher):
    path = tmp_path / "tiny.pt"
    torch.save(teacher.model.state_dict(), path)
    loaded = Teacher(TINY_TEACHER, str(path), torch.device("cpu"))
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded.encode_images(x), teacher.encode_images(x), atol=1e-6)
