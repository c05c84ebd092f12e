"""What the server's parts share: ``ServeSettings`` (the CLI options), ``ServerState`` (the model,
batcher and metrics of one running app) and ``HttpError`` (a 4xx/5xx answer with ``{"error": ...}``).
"""
from __future__ import annotations

import asyncio
import math
import os
from dataclasses import dataclass, field

from formats.errors import UserError
from formats.preprocessing import DEFAULT_MAX_PIXELS, MAX_RESIZED_PIXELS
from runtime.batcher import DynamicBatcher
from runtime.metrics import Metrics
from runtime.model import Classifier


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"  # loopback; 0.0.0.0 listens on every interface
    port: int = 8000
    backend: str = "onnxruntime"  # onnxruntime (CUDA when installed, else CPU), onnxruntime-cpu, tensorrt
    artifact: str | None = None  # a file of the bundle; default: the first one the backend runs
    max_batch: int = 16  # rows per model call; capped by the bundle's max_batch
    max_delay_ms: float = 5.0  # how long the oldest request may wait for a batch to fill
    max_queue: int = 128  # requests waiting; more are refused with 503
    max_body_mb: float = 10.0  # larger request bodies are refused with 413
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are refused with 413 before they are decoded
    top_k: int = 5  # predictions per image
    threads: int = 0  # intra-op threads of the model, 0 = backend default
    decode: str = "auto"  # auto (JPEG draft decoding where export accepted it for the bundle) | exact | jpeg-draft
    decode_workers: int = 0  # images decoded (and KServe bodies parsed) at once, 0 = one per CPU core
    body_timeout_s: float = 10.0  # seconds a client has to send its whole request body; a slower one gets 408
    max_uploads: int = 256  # request bodies being received at once; more are refused with 503

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise UserError(f"--port must be 1..65535, got {self.port}")
        if self.max_batch < 1 or self.max_queue < 1 or self.max_delay_ms < 0:
            raise UserError("--max-batch and --max-queue must be >= 1, --max-delay-ms >= 0")
        if self.max_body_mb <= 0 or self.max_pixels < 1 or self.top_k < 1:
            raise UserError("--max-body-mb, --max-pixels and --top-k must be positive")
        if self.decode_workers < 0:
            raise UserError(f"--decode-workers must be >= 0 (0: one per CPU core), got {self.decode_workers}")
        if not 0 < self.body_timeout_s < math.inf:  # NaN fails both comparisons
            raise UserError(f"--body-timeout-s must be a positive, finite number of seconds (the time a client has "
                            f"to send its whole request body), got {self.body_timeout_s}")
        if self.max_uploads < 1:
            raise UserError(f"--max-uploads must be >= 1 (request bodies received at once), got {self.max_uploads}")

    @property
    def workers(self) -> int:
        return self.decode_workers or os.cpu_count() or 1

    @property
    def max_inflight(self) -> int:
        return self.max_queue + self.max_batch


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
    metrics: Metrics
    settings: ServeSettings
    ready: bool = False
    uploads: int = 0  # request bodies being received (touched on the event loop only)
    inflight: int = 0  # requests whose whole body has arrived, being decoded, queued or run (event loop only)
    decode_slots: asyncio.Semaphore = field(init=False)  # --decode-workers decodes or KServe parses at once

    def __post_init__(self) -> None:
        self.decode_slots = asyncio.Semaphore(self.settings.workers)
