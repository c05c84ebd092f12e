"""The frozen open_clip teacher: image embeddings ``t`` and class text embeddings ``T``.

``pretrained`` is an open_clip tag (downloaded by open_clip when online), a local checkpoint
file, or ``none`` (random weights: the tiny offline teacher, and timing runs). Offline without
cached weights the load fails at once with a message saying how to supply them.
"""
from __future__ import annotations

import contextlib
import difflib
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from distill.errors import UserError
from distill.students import _reachable
from distill.transforms import TargetSpec

TINY_CONFIG_DIR = Path(__file__).parent / "teacher_configs"
TINY_TEACHER = "vl2lite-tiny"  # 32-pixel ViT, 64-d embeddings, random weights: tests and demo


def _open_clip():
    import open_clip
    if TINY_TEACHER not in open_clip.list_models():
        open_clip.add_model_config(TINY_CONFIG_DIR)
    return open_clip


class Teacher:
    """A frozen open_clip model in eval mode; every call runs under inference mode."""

    def __init__(self, model_name: str, pretrained: str, device: torch.device) -> None:
        open_clip = _open_clip()
        weights = resolve_weights(model_name, pretrained)
        try:
            with _quiet_root_logger(weights is None):  # "No pretrained weights loaded" is the intent
                model = open_clip.create_model(model_name, pretrained=weights, device=device)
        except RuntimeError as exc:  # open_clip wraps download failures in RuntimeError
            raise UserError(f"teacher {model_name}/{pretrained} could not be loaded ({str(exc)[:300]}): "
                            f"pass teacher.pretrained=<local checkpoint file>") from None
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.device = device
        pre = open_clip.get_model_preprocess_cfg(model)
        size = pre["size"] if isinstance(pre["size"], int) else pre["size"][0]
        # The teacher sees every view at its own native size and normalisation.
        self.target = TargetSpec(int(size), pre.get("interpolation", "bicubic"),
                                 tuple(pre["mean"]), tuple(pre["std"]))
        self.embed_dim = self.encode_images(torch.zeros(1, 3, size, size)).shape[1]

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) teacher-normalised views -> (B, D) unit-norm float32 embeddings ``t``."""
        with self._autocast():
            emb = self.model.encode_image(x.to(self.device, non_blocking=True))
        return F.normalize(emb.float(), dim=-1)

    @torch.inference_mode()
    def encode_classes(self, class_names: list[str], templates: tuple[str, ...]) -> torch.Tensor:
        """(C, D) unit-norm text embeddings ``T``: per class, the mean over prompt templates."""
        rows = []
        for name in class_names:
            tokens = self.tokenizer([t.format(name) for t in templates]).to(self.device)
            with self._autocast():
                emb = F.normalize(self.model.encode_text(tokens).float(), dim=-1)  # (P, D)
            rows.append(F.normalize(emb.mean(dim=0), dim=-1))
        return torch.stack(rows)


@contextlib.contextmanager
def _quiet_root_logger(quiet: bool):
    root = logging.getLogger()
    level = root.level
    if quiet:
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def resolve_weights(model_name: str, pretrained: str) -> str | None:
    """Check the model name and weights source before any download is attempted."""
    open_clip = _open_clip()
    if model_name not in open_clip.list_models():
        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=3)
        raise UserError(f"unknown teacher model {model_name!r}"
                        + (f"; did you mean {', '.join(close)}?" if close else "; see open_clip.list_models()"))
    if pretrained in ("", "none"):
        return None
    if os.path.isfile(pretrained):
        return pretrained
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        if "/" in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors", ".pth")):
            raise UserError(f"teacher.pretrained file {pretrained} not found: pass an existing checkpoint file")
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise UserError(f"unknown pretrained tag {pretrained!r} for {model_name}; valid tags: "
                        f"{', '.join(tags) or 'none (pass a local checkpoint file)'}")
    if not _cached(cfg) and not _reachable("huggingface.co"):
        source = cfg.get("hf_hub") or cfg.get("url")
        raise UserError(
            f"teacher weights {model_name}/{pretrained} are not cached and the model hub is unreachable: "
            f"on a machine with internet download them (hf_hub: {source}), copy the file here and pass "
            f"teacher.pretrained=<path to the file>")
    return pretrained


def _cached(cfg: dict) -> bool:
    hub = cfg.get("hf_hub", "")
    if not hub:
        return False
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    if filename.endswith(".bin"):
        names.insert(0, filename.replace(".bin", ".safetensors"))
    return any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)
