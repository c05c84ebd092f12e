"""PyTorch eager, as the reference row of ``runtime.bench --reference-checkpoint best.pt``.

The runtime never imports torch: it finds ``TorchSession`` through the entry point
``torch-eager`` of the group ``vl2lite_edge.reference_sessions`` (declared in pyproject.toml),
which exists only where this package and torch are installed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from students.checkpoint import load_student
from students.registry import deployable

BACKEND = "torch-eager"


class TorchSession:
    """The checkpoint's student in eval mode, on the first CUDA GPU if there is one, else the CPU."""

    def __init__(self, checkpoint: Path) -> None:
        model, meta = load_student(checkpoint)
        model = deployable(model, meta.input_size)  # the same inference form as the exported graph
        cuda = torch.cuda.is_available()
        self._device = "cuda" if cuda else "cpu"
        self._model = model.to(self._device)
        self.backend = BACKEND
        self.device = torch.cuda.get_device_name(0) if cuda else "cpu"

    def run(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self._model(torch.from_numpy(batch).to(self._device))
            if self._device == "cuda":
                torch.cuda.synchronize()  # kernels are asynchronous: wait before the timer stops
            return out.float().cpu().numpy()
