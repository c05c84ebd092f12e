"""A student weights file read safely: ``.safetensors``, or a ``.pth`` state_dict under weights_only."""
from __future__ import annotations

from pathlib import Path

import torch

from formats.errors import UserError


def read_state_dict(path: Path, arch: str) -> dict[str, torch.Tensor]:
    """The state_dict in ``path`` (a ``{"state_dict": ...}`` wrapper is unwrapped); one error otherwise."""
    if not path.is_file():
        raise UserError(f"student.weights file {path} not found: pass imagenet, none or an existing weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"student.weights file {path} could not be loaded safely ({exc.__class__.__name__}): it "
                        f"must be a .safetensors file or a plain state_dict for {arch}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise UserError(f"student.weights file {path} holds no state_dict: pass the weights of {arch}")
    return state
