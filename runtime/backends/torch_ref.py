"""PyTorch eager, as a reference row in the benchmark only (never used by predict or serve).

The runtime must import without torch and distill, so both are imported here by name, lazily,
only when the user passes ``bench --reference-checkpoint best.pt`` on a machine that has them.
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import RuntimeUserError

BACKEND = "torch-eager"


def unavailable_reason() -> str | None:
    for module, extra in (("torch", "torch"), ("distill", "the training package (pip install vl2lite-edge[train])")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: the PyTorch reference needs {extra}; drop --reference-checkpoint"
    return None


class TorchSession:
    """The checkpoint's student in eval mode, on the first CUDA GPU if there is one, else the CPU."""

    def __init__(self, checkpoint: Path) -> None:
        reason = unavailable_reason()
        if reason:
            raise RuntimeUserError(reason)
        self._torch: Any = importlib.import_module("torch")
        load_student = importlib.import_module("distill.checkpoint").load_student
        model, _ = load_student(checkpoint)
        cuda = self._torch.cuda.is_available()
        self._device = "cuda" if cuda else "cpu"
        self._model = model.to(self._device)
        self.backend = BACKEND
        self.device = self._torch.cuda.get_device_name(0) if cuda else "cpu"

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self._model(torch.from_numpy(batch).to(self._device))
            if self._device == "cuda":
                torch.cuda.synchronize()  # kernels are asynchronous: wait before the timer stops
            return out.float().cpu().numpy()
