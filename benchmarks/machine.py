"""Machine description and atomic JSON output shared by the benchmark scripts."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from formats import files
from runtime.device import cpu_model, nvidia_smi_gpus


def machine_info() -> dict[str, Any]:
    gpus = nvidia_smi_gpus()
    info: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version(), "gpu": gpus[0].name if gpus else None}
    try:
        import torch
        info["torch"] = str(torch.__version__)
        info["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    except ImportError:
        pass
    where = info["gpu"] or f"{info['cores']}-core {info['cpu']}"
    info["summary"] = f"{where}, {info['platform']}"
    return info


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_json(path, obj)
