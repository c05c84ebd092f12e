"""The KD loss terms, one module per term (or per paper): ``load_terms`` imports (and so registers) them all.

A module here declares a ``LossTerm`` (``distill.loss_terms``) and calls ``register_term``; the
config then accepts its weight ``method.w_<name>`` and training logs ``train_<name>``.
"""
from __future__ import annotations

import importlib
import pkgutil


def load_terms() -> None:
    """Import every term module of this package (once; Python caches the imports)."""
    for name in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"distill.terms.{name}")
