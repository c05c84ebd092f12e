"""The one user-facing error type: one line that names the problem and the fix.

Every CLI prints ``error: <message>`` and exits with status 2, without a traceback.
"""
from __future__ import annotations

import re
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A mistake the user can fix (bad config, missing data, a wrong path, an incomplete bundle).

    ``exit_status`` is the command's exit status (2); a subclass may say otherwise (an accuracy
    budget miss exits 3) and may carry a ``detail`` text printed before the error line.
    """

    exit_status = 2
    detail = ""


def one_line(exc: BaseException) -> str:
    """The user-facing line of an error, also when a DataLoader worker re-raised it.

    DataLoader wraps worker exceptions as ``Caught X in DataLoader worker...`` followed by the
    whole traceback; the last line carries the original message.
    """
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def refusal_reason(exc: BaseException) -> str:
    """Why a file did not load, without the loader's advice: torch's weights_only refusal suggests
    loading with weights_only=False, which would run the pickle. The global a pickle asked for, else
    the first sentence of the error."""
    text = str(exc)
    found = re.search(r"(?i)unsupported global:? (?:GLOBAL )?([\w.]+)", text)
    if found:
        return f"a pickle asking for the Python global {found.group(1)}"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return first.split(". ")[0].rstrip(".")[:160] or exc.__class__.__name__


def run_cli(func: Callable[[], T], interrupted: str = "interrupted: nothing incomplete was kept") -> T:
    """Call ``func`` the way every command line does (only ``__main__`` modules call this).

    A ``UserError`` prints ``error: <one line>`` on stderr (after its ``detail``, e.g. a table of
    attempts, when it has one) and exits with its ``exit_status`` (2 unless the class says
    otherwise); Ctrl-C prints ``interrupted`` and exits 130.
    """
    try:
        return func()
    except UserError as exc:
        detail = getattr(exc, "detail", "")
        if detail:
            print(detail, file=sys.stderr)
        print(f"error: {one_line(exc)}", file=sys.stderr)
        raise SystemExit(getattr(exc, "exit_status", 2)) from None
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        raise SystemExit(130) from None
