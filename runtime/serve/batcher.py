"""Dynamic batching with a bounded queue, as Triton does it: ``max_batch`` rows, ``max_delay``.

Requests wait in a queue of at most ``max_queue`` requests (those not yet executing, including
the ones gathered into the batch being formed); a request that finds it full is refused at once
(the server answers 503) instead of growing the queue without bound. One worker thread takes
the oldest request, waits until the batch has ``max_batch`` rows or the oldest request has waited
``max_delay`` seconds, runs the model once and hands every request its rows. ``close`` stops new
requests and finishes every accepted one before returning.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

import numpy as np


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests: refuse instead of queueing without bound."""


class ShuttingDown(Exception):
    """The batcher is closing: it finishes accepted requests but takes no new ones."""


@dataclass
class _Request:
    x: np.ndarray  # (n, 3, H, W)
    future: Future
    enqueued: float


class DynamicBatcher:
    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int, max_delay_s: float, max_queue: int,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        if max_batch < 1 or max_queue < 1 or max_delay_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1, max_delay >= 0")
        self._run, self._on_batch = run, on_batch
        self.max_batch, self.max_delay_s, self.max_queue = max_batch, max_delay_s, max_queue
        self._pending: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="dynamic-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return len(self._pending)

    def submit(self, x: np.ndarray) -> Future:
        """Queue ``x`` (n rows, n <= max_batch); the future gets its (n, C) output."""
        if not 1 <= len(x) <= self.max_batch:
            raise ValueError(f"a request has 1 to {self.max_batch} rows, got {len(x)}")
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise ShuttingDown()
            if len(self._pending) >= self.max_queue:
                raise QueueFull()
            self._pending.append(_Request(x, future, time.monotonic()))
            self._cond.notify()
        return future

    def close(self) -> None:
        """Refuse new requests, finish the accepted ones, stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _next_batch(self) -> list[_Request] | None:
        with self._cond:
            while not self._pending:
                if self._closed:
                    return None
                self._cond.wait()
            deadline = self._pending[0].enqueued + self.max_delay_s
            # Closing flushes at once: shutdown should not wait out the delay.
            while sum(len(r.x) for r in self._pending) < self.max_batch and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = [self._pending.popleft()]
            rows = len(batch[0].x)
            while self._pending and rows + len(self._pending[0].x) <= self.max_batch:
                rows += len(self._pending[0].x)
                batch.append(self._pending.popleft())
            return batch

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._execute(batch)

    def _execute(self, batch: list[_Request]) -> None:
        """Run one batch; whatever happens, every request gets an answer and the worker lives on."""
        batch = [r for r in batch if r.future.set_running_or_notify_cancel()]  # drop cancelled requests
        if not batch:
            return
        start = time.perf_counter()
        try:
            out = self._run(np.concatenate([r.x for r in batch]))  # (rows, C)
            if len(out) != sum(len(r.x) for r in batch):
                raise RuntimeError(f"the model returned {len(out)} rows for a batch of "
                                   f"{sum(len(r.x) for r in batch)}")
        except BaseException as exc:  # the model failed: every request of the batch gets the error
            # asyncio lets KeyboardInterrupt/SystemExit escape the awaiting loop: hand waiters an Exception
            err = exc if isinstance(exc, Exception) else RuntimeError(f"model run aborted: {exc!r}")
            for r in batch:
                r.future.set_exception(err)
            return
        offset = 0
        for r in batch:
            r.future.set_result(out[offset:offset + len(r.x)])
            offset += len(r.x)
        if self._on_batch:
            try:
                self._on_batch(len(out), time.perf_counter() - start)
            except Exception as exc:  # a metrics hook must never stop the worker
                print(f"warning: the batch hook failed ({exc!r}); batching goes on", file=sys.stderr)
