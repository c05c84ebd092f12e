"""What the server's parts share: ``ServerState`` (the model, batcher, metrics and settings of one
running app), ``HttpError`` (a 4xx/5xx answer with ``{"error": ...}``) and the memory bound that the
settings (``runtime.settings.ServeSettings``) give.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from formats.preprocessing import MAX_RESIZED_PIXELS
from runtime.model import Classifier
from runtime.serve.batcher import DynamicBatcher
from runtime.serve.metrics import ServeMetrics
from runtime.settings import ServeSettings


# What one decode can hold at once, per pixel of the image: measured by benchmarks/serve_memory.py over
# every mode a client can send (40 MP: float32 TIFF 9.13 bytes, int32 8.35, RGBA 8.28, L 5.28, RGB 4.28:
# the decoded image, Pillow's conversions towards RGB, the float32 array), with a margin; plus the
# resized image before the crop (formats.preprocessing bounds it) twice, for extreme aspect ratios.
DECODE_BYTES_PER_PIXEL = 10


def decode_peak_bytes(max_pixels: int) -> int:
    return max_pixels * DECODE_BYTES_PER_PIXEL + MAX_RESIZED_PIXELS * 3 * 2


# A KServe JSON body of n bytes parses into at most about this many times n bytes of Python objects:
# measured by benchmarks/serve_memory.py (flat "0," 5x; nested "[0]," 27x, empty "[]," and "{}," 25x: a
# list object per 3-4 bytes of text), and 34x seen by an attack on another machine; with a margin.
JSON_EXPANSION = 40


def upload_bound_bytes(settings: ServeSettings) -> int:
    """Worst-case memory of the bodies being received: each of ``max_uploads`` uploads holds what
    has arrived, at most ``max_body``; the one whose last chunk came in is joined into one bytes
    object, a second copy. Joins run on the event loop, one at a time, so that copy is counted once."""
    return (settings.max_uploads + 1) * int(settings.max_body_mb * 1e6)


def memory_bound_bytes(settings: ServeSettings) -> int:
    """Worst-case memory of requests above the loaded model (docs/runtime.md): the uploads in
    progress (``upload_bound_bytes``), every request in flight's whole body twice (a multipart form
    copies its file part), plus ``workers`` decodes or KServe parses at their peak. Decoding waits
    for a free worker with the body already read. uvicorn's own buffers per connection are not in it."""
    body = int(settings.max_body_mb * 1e6)
    per_worker = max(decode_peak_bytes(settings.max_pixels), JSON_EXPANSION * body)
    return upload_bound_bytes(settings) + settings.max_inflight * 2 * body + settings.workers * per_worker


def shown(value: object, limit: int = 80) -> str:
    """A client's value in an error message: its repr (which escapes lone surrogates, so the answer
    stays UTF-8), cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class HttpError(Exception):
    """An answer with ``{"error": message}``; ``close``: answer with ``Connection: close`` and close
    the connection, for answers given before the body was read (else a client could keep dripping
    the rest of its body into a kept-alive connection: uvicorn stops its idle timer whenever bytes arrive)."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        # Escaped: a lone surrogate (a client's JSON can hold one) would fail the UTF-8 answer with a 500.
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(message)
        self.status, self.message, self.close = status, message, close


@dataclass
class ServerState:
    clf: Classifier
    batcher: DynamicBatcher
    metrics: ServeMetrics
    settings: ServeSettings
    ready: bool = False
    uploads: int = 0  # request bodies being received (touched on the event loop only)
    inflight: int = 0  # requests whose whole body has arrived, being decoded, queued or run (event loop only)
    decode_slots: asyncio.Semaphore = field(init=False)  # --decode-workers decodes or KServe parses at once

    def __post_init__(self) -> None:
        self.decode_slots = asyncio.Semaphore(self.settings.workers)
