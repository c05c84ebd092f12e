"""Progress of every long step, through one helper: a bar with ETA on a terminal, lines in a log.

    with stage("teacher cache", total=4800, unit="view") as step:
        for batch in loader:
            ...
            step.advance(len(batch))

On a terminal (stderr is a TTY and tqdm is installed) it is a tqdm bar with rate and ETA. Anywhere
else (a log file, CI, a pipe) it prints one line when the stage starts, a line at most every
``every_s`` seconds while it runs (done/total, rate, ETA: a long step is never silent for a minute),
and one line when it ends, with the time it took. ``VL2LITE_PROGRESS=0`` silences both forms.
Torch-free: the runtime uses it too.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import IO, Iterator


def enabled() -> bool:
    return os.environ.get("VL2LITE_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Step:
    """A running stage: ``advance(n)`` after each piece of work; ``note(text)`` for a detail."""

    def __init__(self, name: str, total: int | None, unit: str, stream: IO[str], every_s: float) -> None:
        self.name, self.total, self.unit, self.stream, self.every_s = name, total, unit, stream, every_s
        self.done, self.start, self._last_line = 0, time.perf_counter(), time.perf_counter()
        self._bar = _terminal_bar(name, total, unit, stream)
        if self._bar is None:
            size = f" ({total} {unit}s)" if total is not None else ""
            self._say(f"{name}: started{size}")

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif time.perf_counter() - self._last_line >= self.every_s:
            self._say(f"{self.name}: {self._fraction()}, {self._rate()}{self._eta()}")

    def note(self, text: str) -> None:
        """A detail of the stage (which attempt, which file), on its own line in either form."""
        if self._bar is not None:
            self._bar.write(f"{self.name}: {text}", file=self.stream)
        else:
            self._say(f"{self.name}: {text}")

    def finish(self, failed: bool = False) -> None:
        if self._bar is not None:
            self._bar.close()
        elapsed = duration(time.perf_counter() - self.start)
        what = f"{self.done} {self.unit}s in {elapsed}" if self.done else elapsed
        self._say(f"{self.name}: {'stopped after' if failed else 'done,'} {what}")

    def _fraction(self) -> str:
        return f"{self.done}/{self.total} {self.unit}s" if self.total else f"{self.done} {self.unit}s"

    def _rate(self) -> str:
        elapsed = time.perf_counter() - self.start
        return f"{self.done / elapsed:.1f} {self.unit}s/s" if elapsed > 0 and self.done else "starting"

    def _eta(self) -> str:
        elapsed = time.perf_counter() - self.start
        if not self.total or not self.done:
            return ""
        return f", about {duration(elapsed * (self.total - self.done) / self.done)} left"

    def _say(self, line: str) -> None:
        self._last_line = time.perf_counter()
        print(line, file=self.stream, flush=True)


class _Silent(Step):
    def __init__(self) -> None:  # noqa: D107 - nothing to set up
        self.done = 0

    def advance(self, n: int = 1) -> None:
        self.done += n

    def note(self, text: str) -> None:
        pass

    def finish(self, failed: bool = False) -> None:
        pass


def _terminal_bar(name: str, total: int | None, unit: str, stream: IO[str]):
    """A tqdm bar when ``stream`` is a terminal and tqdm is installed, else None (log lines)."""
    if not getattr(stream, "isatty", lambda: False)():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=name, unit=unit, file=stream, dynamic_ncols=True, leave=False)


@contextmanager
def stage(name: str, total: int | None = None, unit: str = "item", stream: IO[str] | None = None,
          every_s: float = 30.0, show: bool = True) -> Iterator[Step]:
    """Report one long stage (see the module docstring); an exception ends it with 'stopped after'.
    ``show=False`` counts without printing (a worker rank whose rank 0 reports)."""
    if not show or not enabled():
        yield _Silent()
        return
    step = Step(name, total, unit, stream if stream is not None else sys.stderr, every_s)
    try:
        yield step
    except BaseException:
        step.finish(failed=True)
        raise
    step.finish()
