"""The tiny open_clip teacher (random weights, built offline): embeddings and loading errors."""
import time

import pytest
import torch
import torch.nn.functional as F

from distill.teacher import TINY_CONFIG_DIR, TINY_TEACHER, Teacher, resolve_source, resolve_weights
from distill.transforms import TargetSpec
from formats.errors import UserError


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


TINY_PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear", "size": 32}


def tiny_model_cfg() -> dict:
    import json
    return json.loads((TINY_CONFIG_DIR / f"{TINY_TEACHER}.json").read_text())


def test_model_config_json_teacher_takes_its_own_preprocessing_and_weights(tmp_path, teacher):
    import json
    config = tmp_path / "my-teacher.json"
    config.write_text(json.dumps({"model_cfg": tiny_model_cfg(), "preprocess_cfg": TINY_PREPROCESS}))
    weights = tmp_path / "weights.pt"
    torch.save(teacher.model.state_dict(), weights)
    custom = Teacher(str(config), str(weights), torch.device("cpu"))
    assert custom.target == TargetSpec(32, "bilinear", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(custom.encode_images(x), teacher.encode_images(x), atol=1e-6)
    random = Teacher(str(config), "none", torch.device("cpu"))
    assert random.embed_dim == 64


def test_local_dir_teacher_loads_like_open_clip_saves(tmp_path, teacher):
    import json

    from safetensors.torch import save_file
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": tiny_model_cfg(),
                                                              "preprocess_cfg": TINY_PREPROCESS}))
    save_file({k: v.contiguous() for k, v in teacher.model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    loaded = Teacher(f"local-dir:{folder}", "none", torch.device("cpu"))
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded.encode_images(x), teacher.encode_images(x), atol=1e-6)
    assert loaded.target.std == (0.25, 0.25, 0.25)
    names = ["Crimson Finch", "Azure Warbler"]
    assert torch.allclose(loaded.encode_classes(names, ("a photo of {}.",)),
                          teacher.encode_classes(names, ("a photo of {}.",)), atol=1e-5)


def test_a_hugging_face_text_tower_without_transformers_names_the_package(tmp_path):
    import importlib.util
    import json
    if importlib.util.find_spec("transformers") is not None:
        pytest.skip("transformers is installed here: the missing-package path is not reachable")
    folder = tmp_path / "hf-text"
    folder.mkdir()
    cfg = tiny_model_cfg()
    cfg["text_cfg"] = {"hf_model_name": "sentence-transformers/all-MiniLM-L6-v2", "hf_tokenizer_name":
                       "sentence-transformers/all-MiniLM-L6-v2", "hf_model_pretrained": False, "hf_proj_type": "linear",
                       "hf_pooler_type": "mean_pooler"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": TINY_PREPROCESS}))
    (folder / "open_clip_model.safetensors").write_bytes(b"")
    with pytest.raises(UserError) as err:
        Teacher(f"local-dir:{folder}", "laion2b_s34b_b79k", torch.device("cpu"))  # a leftover tag in the config
    message = str(err.value)
    assert "needs the transformers package: pip install transformers" in message and "kd-bench" in message
    assert "laion2b" not in message and "pass teacher.model=local-dir" not in message  # nothing glued, no advice given already


@pytest.mark.parametrize("drop, message", [
    ("mean", "preprocess_cfg.mean is missing"),
    ("interpolation", "preprocess_cfg.interpolation is missing"),
    ("preprocess_cfg", "has no preprocess_cfg"),
])
def test_teacher_config_without_preprocessing_names_the_field(tmp_path, drop, message):
    import json
    raw = {"model_cfg": tiny_model_cfg(), "preprocess_cfg": dict(TINY_PREPROCESS)}
    if drop == "preprocess_cfg":
        del raw["preprocess_cfg"]
    else:
        del raw["preprocess_cfg"][drop]
    config = tmp_path / "t.json"
    config.write_text(json.dumps(raw))
    with pytest.raises(UserError, match=message):
        resolve_source(str(config), "none")


def test_custom_teacher_sources_fail_fast_and_name_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(UserError, match="download open_clip_config.json and open_clip_model.safetensors .*local-dir"):
        resolve_source("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "none")
    assert time.perf_counter() - start < 5
    with pytest.raises(UserError, match="open_clip_config.json not found"):
        resolve_source(f"local-dir:{tmp_path}", "none")
    with pytest.raises(UserError, match="config file .*missing.json not found"):
        resolve_source(str(tmp_path / "missing.json"), "none")
    (tmp_path / "open_clip_config.json").write_text('{"model_cfg": {}, "preprocess_cfg": ' +
                                                    '{"mean": [0], "std": [1], "interpolation": "bicubic", "size": 8}}')
    with pytest.raises(UserError, match="holds no weights file"):
        resolve_source(f"local-dir:{tmp_path}", "none")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="is not valid JSON"):
        resolve_source(str(tmp_path / "bad.json"), "none")


def test_a_weights_file_that_does_not_load_safely_is_one_clear_error(tmp_path):
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="could not be loaded .*loads safely \\(weights only\\)"):
        Teacher(TINY_TEACHER, str(bad), torch.device("cpu"))
