"""Taking a request in: the body under its size and time limits, the image of ``/predict`` (raw or
multipart) decoded and preprocessed, query parameters, the two admission bounds (uploads in
progress, requests in flight), and the hand-off to the dynamic batcher (queue full or shutting
down -> 503).

A request passes two bounds in turn, each refused at once with 503 when full: ``--max-uploads``
while its body arrives (at most ``--body-timeout-s``, then 408), and only once the whole body is
here ``--max-queue`` + ``--max-batch`` while it is decoded, queued and run. So clients that send a
body slowly, or stall, can hold at most the upload places, never the places of the requests ready
to run.
"""
from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
from starlette.requests import Request

from formats.preprocessing import ImageError
from runtime.serve.batcher import QueueFull, ShuttingDown
from runtime.serve.state import HttpError, ServerState, shown


async def received_body(request: Request, state: ServerState) -> bytes:
    """The whole request body, read while holding an upload place (``--max-uploads``)."""
    with uploading(state):
        return await read_body(request, int(state.settings.max_body_mb * 1e6), state.settings.body_timeout_s)


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes without reading it all, and
    (408, connection closed) a body not wholly arrived ``timeout_s`` seconds after its headers:
    a deadline for the whole body, not per read, so a client dripping a byte at a time is cut off too."""
    declared = whole_number(request.headers.get("content-length", ""))
    if declared is not None and declared > limit:
        raise HttpError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
    try:
        return await asyncio.wait_for(_chunks_joined(request, limit), timeout_s)
    except asyncio.TimeoutError:
        raise HttpError(408, f"the request body did not arrive within {timeout_s:g} s (the server's body "
                             f"timeout): send the whole body without pausing", close=True) from None


async def _chunks_joined(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)  # no await after it: one join (a second copy of a body) at a time


async def image_bytes(request: Request, body: bytes) -> bytes:
    """The image in ``body``: the raw body, or the ``file`` part (else the first file part) of a multipart form."""
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
def uploading(state: ServerState) -> Iterator[None]:
    """Bound the bodies being received (``--max-uploads``), before any byte of one is read.

    Refused with ``Connection: close``: the body is not read, and a client still sending it should
    not keep the connection open with it."""
    limit = state.settings.max_uploads
    if state.uploads >= limit:
        raise HttpError(503, f"server busy: {limit} uploads are in progress; retry later", close=True)
    state.uploads += 1
    try:
        yield
    finally:
        state.uploads -= 1


@contextmanager
def admitted(state: ServerState) -> Iterator[None]:
    """Bound the requests in flight: those whose whole body has arrived, being decoded, queued or run.

    Entered right after ``received_body`` returns, with no await between, so every body is always
    counted by one bound or the other. The batcher's queue bounds the requests waiting for the
    model; this bounds those waiting for a decode worker too.
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
