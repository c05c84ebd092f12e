"""Slow and stalled uploads against a real server on loopback (hardening round 2, item 1).

Clients that sent the headers and a few bytes of a body, then waited, used to hold the places of
the requests in flight: every other request got 503 for as long as they waited. Now a body has
``--body-timeout-s`` to arrive (then 408, connection closed), bodies being received have their own
bound (``--max-uploads``), and a request takes a place in flight only once its whole body is here.
Raw sockets play the slow clients.
"""
from __future__ import annotations

import asyncio
import io
import json
import math
import re
import signal
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from PIL import Image

from formats.errors import UserError
from runtime.serve.__main__ import main
from runtime.serve.intake import admitted, uploading
from runtime.serve.state import HttpError, memory_bound_bytes, upload_bound_bytes
from runtime.settings import ServeSettings
from tests.runtime_helpers import REPO, make_images, start_server

BODY_TIMEOUT_S = 2.0
MAX_UPLOADS = 210
STALLED = 200  # the case: 200 stalled uploads in progress, a normal /predict answers within 1 s


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return make_images(tmp_path_factory.mktemp("slow-client-images"))


@pytest.fixture(scope="module")
def server(exported_bundle: Path):
    """Three places in flight (queue 2 + batch 1), 210 upload places, bodies have 2 s to arrive."""
    proc, url = start_server(exported_bundle, "--max-queue", "2", "--max-batch", "1",
                             "--body-timeout-s", str(BODY_TIMEOUT_S), "--max-uploads", str(MAX_UPLOADS))
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    proc.stdout.close()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _stalled(port: int, path: str = "/predict", content_type: str = "image/jpeg", sent: int = 10) -> socket.socket:
    """Headers announcing 100,000 bytes, then ``sent`` of them, then nothing."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
              f"Content-Length: 100000\r\n\r\n".encode() + b"\xff" * sent)
    return s


def _answer(s: socket.socket) -> tuple[int, str, dict]:
    """Status, headers and JSON body of the server's answer, read until the server closes the
    connection (a server that keeps it open fails here with a socket timeout)."""
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode().lower(), json.loads(body)


def _metric(url: str, series: str) -> float:
    """The value of one series of /metrics (``name`` or ``name{labels}`` without the prefix); 0 if absent."""
    text = httpx.get(f"{url}/metrics").text
    match = re.search(rf"^vl2lite_{re.escape(series)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


# --------------------------------------------------------------------------- stalled uploads

def test_stalled_uploads_leave_the_places_in_flight_free(server: str, exported_bundle: Path,
                                                         images: list[Path]) -> None:
    """200 stalled uploads, far beyond the 3 places in flight: /predict and KServe still answer 200
    within a second; after the body timeout every stalled upload gets 408 and is closed."""
    before = _metric(server, 'requests_total{endpoint="/predict",status="408"}')
    stalled = [_stalled(_port(server)) for _ in range(STALLED)]
    try:
        _until(lambda: _metric(server, "uploads_in_progress") == STALLED, 5, f"{STALLED} uploads in progress")
        start = time.monotonic()
        r = httpx.post(f"{server}/predict", content=images[0].read_bytes(), timeout=5)
        assert r.status_code == 200 and time.monotonic() - start < 1.0, (r.text, time.monotonic() - start)
        h, w = json.loads((exported_bundle / "preprocessing.json").read_text())["input_size"]
        tensor = {"name": "input", "shape": [1, 3, h, w], "datatype": "FP32", "data": [0.0] * (3 * h * w)}
        infer = httpx.post(f"{server}/v2/models/{exported_bundle.name}/infer", json={"inputs": [tensor]}, timeout=5)
        assert infer.status_code == 200, infer.text
        assert _metric(server, "requests_in_flight") == 0 and _metric(server, "uploads_in_progress") == STALLED
        answers = [_answer(s) for s in stalled]
    finally:
        for s in stalled:
            s.close()
    assert [status for status, _, _ in answers] == [408] * STALLED
    assert all("connection: close" in head for _, head, _ in answers)
    assert f"within {BODY_TIMEOUT_S:g} s" in answers[0][2]["error"]
    assert _metric(server, 'requests_total{endpoint="/predict",status="408"}') == before + STALLED
    assert _metric(server, "uploads_in_progress") == 0


def test_a_stalled_upload_gets_408_after_the_body_timeout(server: str, exported_bundle: Path) -> None:
    infer = f"/v2/models/{exported_bundle.name}/infer"
    before = _metric(server, 'requests_total{endpoint="/v2/models/{name}/infer",status="408"}')
    start = time.monotonic()
    s = _stalled(_port(server), infer, "application/json")
    status, head, body = _answer(s)
    waited = time.monotonic() - start
    assert status == 408 and "connection: close" in head, body
    assert BODY_TIMEOUT_S - 0.1 <= waited < BODY_TIMEOUT_S + 1.5, waited
    assert "did not arrive within 2 s" in body["error"]
    assert _metric(server, 'requests_total{endpoint="/v2/models/{name}/infer",status="408"}') == before + 1
    assert 'status="500"' not in httpx.get(f"{server}/metrics").text


def test_a_slow_upload_that_finishes_in_time_is_answered(server: str, images: list[Path]) -> None:
    """The timeout is for the whole body; a client that sends it in pieces within it gets 200."""
    payload = images[0].read_bytes()
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as s:
        s.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nConnection: close\r\n"
                  f"Content-Length: {len(payload)}\r\n\r\n".encode())
        for piece in np.array_split(np.frombuffer(payload, np.uint8), 5):
            time.sleep(0.2)
            s.sendall(piece.tobytes())
        status, _, body = _answer(s)
    assert status == 200 and body["predictions"], body


def test_beyond_max_uploads_a_new_upload_gets_503_at_once(server: str, images: list[Path]) -> None:
    stalled = [_stalled(_port(server)) for _ in range(MAX_UPLOADS)]
    try:
        _until(lambda: _metric(server, "uploads_in_progress") == MAX_UPLOADS, 5, "all upload places taken")
        start = time.monotonic()
        status, head, body = _answer(_stalled(_port(server)))
        assert status == 503 and time.monotonic() - start < 0.5, (body, time.monotonic() - start)
        assert f"{MAX_UPLOADS} uploads are in progress" in body["error"] and "connection: close" in head
        assert httpx.get(f"{server}/v2/health/ready").status_code == 200  # GETs have no body to wait for
    finally:
        for s in stalled:
            s.close()
    _until(lambda: _metric(server, "uploads_in_progress") == 0, 5, "the upload places freed")
    assert httpx.post(f"{server}/predict", content=images[0].read_bytes()).status_code == 200


# --------------------------------------------------------------------------- the bounds themselves

def test_requests_in_flight_are_bounded_once_their_bodies_have_arrived(exported_bundle: Path) -> None:
    """Queue 1 + batch 1 = two places in flight, one decode at a time: of four slow-to-decode images
    sent at once (whole bodies), one decodes, one waits for the decoder, two get 503 at once."""
    pixels = np.zeros((4000, 4000, 3), np.uint8)
    pixels[::97, ::89] = 255
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    proc, url = start_server(exported_bundle, "--max-queue", "1", "--max-batch", "1", "--decode-workers", "1",
                             "--max-pixels", "16000000")
    try:
        async def four() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                return await asyncio.gather(*(client.post(f"{url}/predict", content=buf.getvalue()) for _ in range(4)))
        responses = asyncio.run(four())
        assert sorted(r.status_code for r in responses) == [200, 200, 503, 503], [r.text for r in responses]
        assert all("2 requests are in flight" in r.json()["error"] for r in responses if r.status_code == 503)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()


def test_the_two_bounds_refuse_with_503_and_uploads_close_the_connection() -> None:
    state = SimpleNamespace(settings=ServeSettings(max_uploads=2, max_queue=1, max_batch=1), uploads=0, inflight=0)
    with uploading(state), uploading(state):
        with pytest.raises(HttpError) as refused:
            with uploading(state):
                pass
        assert refused.value.status == 503 and refused.value.close and "2 uploads" in refused.value.message
        with admitted(state), admitted(state):  # uploads do not count against the places in flight
            with pytest.raises(HttpError) as busy:
                with admitted(state):
                    pass
            assert busy.value.status == 503 and not busy.value.close
    assert state.uploads == 0 and state.inflight == 0


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
def test_a_body_timeout_that_is_not_a_positive_number_is_refused(value: float) -> None:
    with pytest.raises(UserError, match="--body-timeout-s must be a positive, finite number of seconds"):
        ServeSettings(body_timeout_s=value)


def test_max_uploads_below_one_is_refused_and_the_cli_says_so(capsys, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--max-uploads must be >= 1"):
        ServeSettings(max_uploads=0)
    with pytest.raises(SystemExit) as exit_:  # refused before the bundle is opened
        main([str(tmp_path / "no-bundle"), "--body-timeout-s", "0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("error: --body-timeout-s must be a positive")


def test_the_memory_bound_counts_every_upload_in_progress() -> None:
    """Each upload place can hold a whole body; one body more for the join of a finished one."""
    body = 10_000_000
    one, two = ServeSettings(max_uploads=1, decode_workers=2), ServeSettings(max_uploads=2, decode_workers=2)
    assert memory_bound_bytes(two) - memory_bound_bytes(one) == body
    assert upload_bound_bytes(one) == 2 * body
    defaults = ServeSettings(decode_workers=2)  # the figures docs/runtime.md gives for the defaults on 2 cores
    doc = " ".join((REPO / "docs" / "runtime.md").read_text().split())
    assert f"{upload_bound_bytes(defaults) / 1e9:.2f} + 2.88 + 2 x 0.42 = {memory_bound_bytes(defaults) / 1e9:.2f} GB" \
        in doc


def test_sigterm_drains_a_stalled_upload_within_its_body_timeout(exported_bundle: Path) -> None:
    """A stalled upload used to keep a stopping server waiting for ever; now for its body timeout."""
    proc, url = start_server(exported_bundle, "--body-timeout-s", "1")
    try:
        s = _stalled(_port(url))
        _until(lambda: _metric(url, "uploads_in_progress") == 1, 5, "the upload in progress")
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        status, _, _ = _answer(s)
        assert status == 408
        assert proc.wait(timeout=10) == 0 and time.monotonic() - start < 5
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    out = proc.stdout.read()
    proc.stdout.close()
    assert "1 upload(s) in progress" in out and "Traceback" not in out, out
