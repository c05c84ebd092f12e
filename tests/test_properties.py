"""Property-based tests (hypothesis): inputs no list of cases would think of.

The server's endpoints, in-process through Starlette's test client on the real app and the real
model: whatever the body, query or path, the answer is 200 or a 4xx with ``{"error": <text>}``,
never a 5xx, and the server keeps answering. Config overrides: whatever the key and value, loading
gives a config or one UserError, never another exception.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from formats.errors import UserError
from tests.conftest import REPO, demo_overrides

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Where a client sends a number or a string, also what passes a careless check: "²" passes
# str.isdigit() but not int(), "٣" passes both (and is no ASCII count); JSON true loads as a Python
# int; a JSON "\ud800" escape loads as a lone surrogate, which no UTF-8 answer can carry.
UNICODE_DIGITS = st.characters(categories=["Nd", "No", "Nl"])
SURROGATES = st.characters(categories=["Cs"])
DIGITISH = st.sampled_from("0123456789 +-_²³①") | UNICODE_DIGITS  # what a count in a query might be written with
TEXT = st.text(st.characters() | UNICODE_DIGITS | SURROGATES, max_size=8)
NUMBERISH = (st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(UNICODE_DIGITS, min_size=1, max_size=3)
             | st.text(SURROGATES, min_size=1, max_size=2))


@pytest.fixture(scope="module")
def client(exported_bundle: Path):
    from starlette.testclient import TestClient

    from runtime.serve import create_app
    from runtime.settings import ServeSettings
    app = create_app(exported_bundle, ServeSettings(max_body_mb=0.5, max_pixels=200_000, max_batch=4, max_queue=8))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _answer_ok(response) -> None:
    event(f"status {response.status_code}")
    assert response.status_code == 200 or 400 <= response.status_code < 500, (response.status_code, response.text)
    if response.status_code != 200:
        body = response.json()
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]


def _image_bytes(data: st.DataObject) -> bytes:
    """A real image of random size, mode and format, sometimes truncated or with flipped bytes."""
    w, h = data.draw(st.integers(1, 300)), data.draw(st.integers(1, 300))
    mode = data.draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1", "I;16", "CMYK"]))
    fmt = data.draw(st.sampled_from(["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    try:
        img.save(buf, fmt)
    except (OSError, ValueError, KeyError):  # a mode this format cannot store: send it as PNG
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "PNG")
    raw = bytearray(buf.getvalue())
    damage = data.draw(st.sampled_from(["none", "truncate", "flip"]))
    if damage == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw)))]
    elif damage == "flip" and raw:
        for _ in range(data.draw(st.integers(1, 8))):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    return bytes(raw)


@SETTINGS
@given(data=st.data())
def test_predict_answers_any_body_with_200_or_a_clear_4xx(client, data) -> None:
    body = _image_bytes(data) if data.draw(st.booleans()) else data.draw(st.binary(max_size=4096))
    query = data.draw(st.sampled_from(["", "?top_k=1", "?top_k=0", "?top_k=-3", "?top_k=abc", "?top_k=99999",
                                       "?top_k=1e3", "?top_k=%00", "?x=1&top_k=2"]))
    kind = data.draw(st.sampled_from(["raw", "multipart", "multipart-other-field"]))
    if kind == "raw":
        response = client.post(f"/predict{query}", content=body, headers={"content-type": "image/jpeg"})
    else:
        field = "file" if kind == "multipart" else "upload"
        response = client.post(f"/predict{query}", files={field: ("x.bin", body, "application/octet-stream")})
    _answer_ok(response)
    if response.status_code == 200:
        assert 1 <= len(response.json()["predictions"]) <= 10


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), (90, 140, 200)).save(buf, "PNG")
    return buf.getvalue()


@SETTINGS
@given(top_k=st.text(DIGITISH, min_size=1, max_size=6) | st.sampled_from(["+3", "1_0", " 2", "1" * 5000]))
def test_predict_answers_any_top_k_with_200_or_a_clear_4xx(client, top_k) -> None:
    response = client.post(f"/predict?top_k={quote(top_k)}", content=_png(), headers={"content-type": "image/png"})
    _answer_ok(response)
    if response.status_code == 200:  # ASCII digits only, however int() or str.isdigit() would read the rest
        assert top_k.isascii() and len(response.json()["predictions"]) == int(top_k)


JSON = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | TEXT,
                    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(TEXT, inner, max_size=6),
                    max_leaves=40)


@SETTINGS
@given(data=st.data())
def test_kserve_infer_answers_any_request_with_200_or_a_clear_4xx(client, exported_bundle, data) -> None:
    name = json.loads((exported_bundle / "manifest.json").read_text())["name"]
    h, w = json.loads((exported_bundle / "preprocessing.json").read_text())["input_size"]
    n = data.draw(st.integers(0, 3))  # 0 rows: a 400
    well_formed = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [n, 3, h, w],
                               "data": np.zeros(n * 3 * h * w).tolist()}]}
    # A valid request with one part replaced by anything, or any JSON at all.
    request = data.draw(st.sampled_from(["valid", "mutated", "mutated", "any"]))
    if request == "valid":
        body = json.dumps(well_formed).encode()
    elif request == "mutated":
        part = data.draw(st.sampled_from(["name", "datatype", "shape", "data", "inputs", "outputs", "id"]))
        value = data.draw(JSON)
        if part in ("inputs", "outputs", "id"):
            well_formed[part] = value
        else:
            well_formed["inputs"][0][part] = value
        body = json.dumps(well_formed, allow_nan=True).encode()
    else:
        body = json.dumps(data.draw(JSON), allow_nan=True).encode()
    model = data.draw(st.sampled_from([name, name, name, name + "x", "%2e%2e", ""]))
    response = client.post(f"/v2/models/{model}/infer", content=body)
    _answer_ok(response)
    if request == "valid" and model == name and n > 0:
        assert response.status_code == 200 and response.json()["outputs"][0]["shape"][0] == n


@SETTINGS
@given(data=st.data())
def test_kserve_infer_answers_odd_numbers_and_strings_with_200_or_a_clear_4xx(client, exported_bundle, data) -> None:
    """One field of a valid request replaced by what passes a careless check: a boolean, a Unicode
    digit, a lone surrogate, in a shape entry, the id, the input name or the datatype."""
    name = json.loads((exported_bundle / "manifest.json").read_text())["name"]
    h, w = json.loads((exported_bundle / "preprocessing.json").read_text())["input_size"]
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 3, h, w], "data": [0.0] * (3 * h * w)}
    request = {"id": "r", "inputs": [tensor]}
    field = data.draw(st.sampled_from(["shape", "shape", "id", "name", "datatype"]))
    if field == "shape":
        tensor["shape"][data.draw(st.sampled_from([0, 0, 1, 2, 3]))] = data.draw(NUMBERISH)
    else:
        (request if field == "id" else tensor)[field] = data.draw(NUMBERISH | TEXT)
    _answer_ok(client.post(f"/v2/models/{name}/infer", content=json.dumps(request, allow_nan=True).encode()))


ROUTES = ["predict", "metrics", "v2", "v2/health/live", "v2/health/ready", "v2/models/{m}", "v2/models/{m}/ready",
          "v2/models/{m}/infer", "v2/models/{m}/versions/1/infer", "v2/repository/index"]


@SETTINGS
@given(path=st.sampled_from(ROUTES) | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126,
                                                                     exclude_characters="?#"), max_size=30),
       model=st.sampled_from(["demo", "x", "%00", "..", "a" * 300]),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]))
def test_any_route_and_method_answers_with_the_error_shape(client, path, model, method) -> None:
    response = client.request(method, "/" + path.replace("{m}", model).lstrip("/"), content=b"{}")
    if method == "HEAD":  # no body by definition
        assert response.status_code < 500
        return
    _answer_ok(response)
    assert client.get("/v2/health/ready").status_code == 200  # and the server still serves


KEYS = ["data.input_size", "data.batch_size", "train.epochs", "train.lr", "method.w_vis", "method.schedule",
        "teacher.cache_views", "student.arch", "data.prompts", "method.calibration_strengths", "train.select"]


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(KEYS) | st.text(max_size=20),
       value=st.text(max_size=20) | st.integers(-10**12, 10**12).map(str) | st.floats().map(str)
       | st.sampled_from(["[]", "[1, 2]", "{a: 1}", "null", "true", "~", "!!python/object:os.system", "'", "[", "1e400"]))
def test_any_config_override_gives_a_config_or_one_user_error(key, value) -> None:
    from distill.config import load_config
    overrides = {**demo_overrides(REPO / "data" / "unused", REPO / "runs" / "unused")}
    try:
        load_config(REPO / "configs" / "demo.yaml", [*(f"{k}={v}" for k, v in overrides.items()), f"{key}={value}"])
    except UserError as exc:
        assert str(exc).strip()
