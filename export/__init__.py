"""Export a distilled student into a deployable bundle (ONNX FP32/FP16/INT8, TensorRT, Triton).

Library first::

    from export import export_bundle, ExportOptions
    export_bundle(checkpoint, out, ExportOptions(backends=("int8", "fp16")))   # python -m export ... --int8 --fp16

    from export import quantization_aware_training, QatSettings                # python -m export.qat
    quantization_aware_training(checkpoint, QatSettings(epochs=10))

``BudgetError`` (a ``UserError``, exit status 3) is an artifact that missed the accuracy budget.
The command lines (``export/__main__.py``, ``export/qat/__main__.py``) only parse arguments. The
bundle layout is the contract in docs/bundle.md; an export backend is one module of
``export/backends/`` (``export.registry``). The two functions load torch on first use.
"""
from __future__ import annotations

from typing import Any

from export.budget import BudgetError
from export.settings import ExportOptions, QatSettings
from export.version import __version__

__all__ = ["__version__", "export_bundle", "ExportOptions", "BudgetError", "quantization_aware_training", "QatSettings"]


def __getattr__(name: str) -> Any:
    """The two entry points that need torch, imported when first used."""
    if name == "export_bundle":
        from export.api import export_bundle
        return export_bundle
    if name == "quantization_aware_training":
        from export.int8.qat import quantization_aware_training
        return quantization_aware_training
    raise AttributeError(f"module 'export' has no attribute {name!r}")
