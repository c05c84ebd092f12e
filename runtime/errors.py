"""User-facing errors of the runtime: one line that names the problem and the fix.

The runtime must import without distill, so it has its own error type; the CLIs print
``error: <message>`` and exit with status 2, without a traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class RuntimeUserError(Exception):
    """A mistake the user can fix: a wrong path, an incomplete bundle, a missing backend."""


def run_cli(func: Callable[[], T]) -> T:
    """Call ``func``; turn a RuntimeUserError into ``error: ...`` on stderr and exit status 2."""
    try:
        return func()
    except RuntimeUserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
