"""Taking a request in: the body under its size limit, the image of ``/predict`` (raw or multipart)
decoded and preprocessed, query parameters, the bound on requests in flight, and the hand-off to
the dynamic batcher (queue full or shutting down -> 503).
"""
from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
from starlette.requests import Request

from formats.preprocessing import ImageError
from runtime.batcher import QueueFull, ShuttingDown
from runtime.serve_state import HttpError, ServerState, shown


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes without reading it all."""
    declared = whole_number(request.headers.get("content-length", ""))
    if declared is not None and declared > limit:
        raise HttpError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def image_bytes(request: Request, limit: int) -> bytes:
    """The raw body, or the ``file`` part (else the first file part) of a multipart form."""
    body = await read_body(request, limit)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async with Request(request.scope, replay).form(max_files=4, max_fields=16) as form:  # closes its temp files
        upload = form.get("file") or next((v for v in form.values() if hasattr(v, "read")), None)
        if upload is None or not hasattr(upload, "read"):
            raise HttpError(400, "multipart request has no file part: send the image as field 'file'")
        return await upload.read()


@contextmanager
def admitted(state: ServerState) -> Iterator[None]:
    """Bound the requests in flight (bodies and decoded images in memory) before any is read.

    The batcher's queue bounds the requests waiting for the model; this bounds those still being
    read and decoded too, so memory stays within about (max_queue + max_batch) x (body + image).
    """
    limit = state.settings.max_queue + state.settings.max_batch
    if state.inflight >= limit:
        raise HttpError(503, f"server busy: {limit} requests are in flight; retry later")
    state.inflight += 1
    try:
        yield
    finally:
        state.inflight -= 1


async def infer_batched(state: ServerState, x: np.ndarray) -> np.ndarray:
    try:
        future = state.batcher.submit(x)
    except QueueFull:
        raise HttpError(503, f"server busy: {state.batcher.max_queue} requests are queued; retry later") from None
    except ShuttingDown:
        raise HttpError(503, "server is shutting down") from None
    finally:
        state.metrics.set("queue_depth", state.batcher.depth)
    return await asyncio.wrap_future(future)


def decode_image(data: bytes, state: ServerState) -> np.ndarray:
    if not data:
        raise HttpError(400, "empty request body: send an image (JPEG, PNG, ...)")
    try:
        return state.clf.load(data, state.settings.max_pixels)[None]  # (1, 3, H, W)
    except ImageError as exc:
        raise HttpError(exc.status, str(exc)) from None


MAX_DIGITS = 18  # any count or size a request may name fits; int() of 4,300+ digits would raise


def whole_number(text: str) -> int | None:
    """``text`` as a non-negative int when it is 1 to 18 ASCII digits, else None.

    Strict on purpose: ``str.isdigit`` accepts "²" and other Unicode digits that ``int`` then
    refuses, and ``int`` accepts signs, spaces and underscores that no count is written with."""
    if not 0 < len(text) <= MAX_DIGITS or not (text.isascii() and text.isdecimal()):
        return None
    return int(text)


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = whole_number(raw)
    if value is None or not low <= value <= high:
        raise HttpError(400, f"query parameter {name} must be a whole number in {low}..{high} "
                             f"(ASCII digits), got {shown(raw)}")
    return value
