"""Third-party chatter, kept out of export's output: what onnxruntime, onnx and torch.onnx say on their own.

onnxruntime's calibrators ``print()`` their progress ("Collecting tensor data and making
histogram ..."), its quantizer logs through the root logger ("Please consider to run
pre-processing before quantization"), its C++ core logs graph warnings, and torch.onnx warns
about its own deprecations. None of it is about the user's export, so ``quiet(what)`` wraps each
such library call and captures it at its own level, only for that call:

- Python warnings: ``warnings.catch_warnings()`` around the call (ignored there, nowhere else);
- ``logging`` records: the root logger's handlers swapped for a collecting one during the call
  (so ``logging.warning`` installs no stderr handler for the rest of the process); records of
  ERROR and above are printed, prefixed with ``what``;
- onnxruntime's C++ log: a ``set_default_logger_callback`` callback during the call (errors printed);
- ``print()`` and tqdm: ``sys.stdout`` and ``sys.stderr`` redirected around the call only.

If the call raises, everything it said is printed before the exception propagates: nothing that
explains a failure is hidden. ``library_output(shown=True)`` (``--verbose``) or ``VL2LITE_VERBOSE=1``
lets it all through
(its ``print()`` on stderr: stdout carries only the command's result, the bundle path).
Our own lines (``export.job.log``, ``formats.progress`` stages, which hold the real stderr from
before the call) are never captured.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from contextvars import ContextVar
from typing import Iterator

import onnxruntime

_SHOWN: ContextVar[bool] = ContextVar("library_output_shown", default=False)
VERBOSE_ENV = "VL2LITE_VERBOSE"
ORT_ERROR = 3  # onnxruntime severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal


def libraries_shown() -> bool:
    """Whether the libraries' own output is let through here: ``--verbose``, or ``VL2LITE_VERBOSE=1``
    (the runtime's switch too)."""
    return _SHOWN.get() or os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def library_output(shown: bool) -> Iterator[None]:
    """Whether the libraries' own output is shown (``--verbose``) inside this block (``quiet`` reads it)."""
    token = _SHOWN.set(shown)
    try:
        yield
    finally:
        _SHOWN.reset(token)


class _Collect(logging.Handler):
    """Keeps every log record of the wrapped call."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def quiet(what: str) -> Iterator[None]:
    """Around one library call (``what``: its name in our lines): its chatter captured (module docstring)."""
    if libraries_shown():
        with contextlib.redirect_stdout(sys.stderr):  # shown, on stderr: stdout carries only the command's result
            yield
        return
    text, collect, native = io.StringIO(), _Collect(), []
    stderr = sys.stderr  # the real one, for what must be shown
    try:
        with _root_handler(collect), _ort_log(native), warnings.catch_warnings(), \
                contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
            warnings.simplefilter("ignore")
            yield
    except BaseException:
        said = text.getvalue() + "".join(f"{r.levelname}: {r.getMessage()}\n" for r in collect.records) + \
            "".join(f"onnxruntime: {message}\n" for _, message in native)
        if said.strip():
            print(f"{what} said, before it failed:\n{said.rstrip()}", file=stderr, flush=True)
        raise
    errors = [r.getMessage() for r in collect.records if r.levelno >= logging.ERROR]
    errors += [message for severity, message in native if severity >= ORT_ERROR]
    for message in errors:
        print(f"{what}: {message}", file=stderr, flush=True)


@contextlib.contextmanager
def _root_handler(handler: logging.Handler) -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = saved


@contextlib.contextmanager
def _ort_log(into: list[tuple[int, str]]) -> Iterator[None]:
    """onnxruntime's C++ log lines (severity, message) of the call; older onnxruntime (no callback): as they are."""
    register = getattr(onnxruntime, "set_default_logger_callback", None)
    if register is None:
        yield
        return
    register(lambda severity, category, logid, where, message: into.append((severity, message)), 2)
    try:
        yield
    finally:
        register(None, 2)
