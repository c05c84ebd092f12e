"""runtime.serve as a real process on loopback: /predict, KServe v2, metrics, bad input, load, 503, shutdown."""
from __future__ import annotations

import asyncio
import io
import json
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from formats.preprocessing import open_image, preprocess_image
from runtime.model import open_classifier
from tests.runtime_helpers import make_images, start_server


@pytest.fixture(scope="module")
def bundle(exported_bundle) -> Path:
    return exported_bundle


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return make_images(tmp_path_factory.mktemp("serve-images"))


@pytest.fixture(scope="module")
def server(bundle: Path):
    """Limits made small so the tests can cross them cheaply: 1 MB bodies, 100k-pixel images."""
    proc, url = start_server(bundle, "--max-body-mb", "1", "--max-pixels", "100000", "--max-batch", "8")
    yield url
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def _input_size(bundle: Path) -> tuple[int, int]:
    h, w = json.loads((bundle / "preprocessing.json").read_text())["input_size"]
    return h, w


def test_predict_raw_and_multipart(server: str, bundle: Path, images: list[Path]) -> None:
    clf = open_classifier(bundle, "onnxruntime-cpu")
    expected = clf.logits(preprocess_image(open_image(images[1]), clf.bundle.preprocessing)[None])[0]
    raw = httpx.post(f"{server}/predict?top_k=3", content=images[1].read_bytes())
    form = httpx.post(f"{server}/predict", files={"file": (images[1].name, images[1].read_bytes(), "image/png")})
    assert raw.status_code == 200 and form.status_code == 200
    assert len(raw.json()["predictions"]) == 3 and len(form.json()["predictions"]) == 5
    assert raw.json()["predictions"][0]["index"] == int(expected.argmax())
    assert raw.json()["predictions"] == form.json()["predictions"][:3]
    assert raw.json()["model"] == bundle.name and raw.json()["artifact"] == clf.artifact.file  # runtime.choice's


def test_kserve_v2_protocol(server: str, bundle: Path) -> None:
    name = bundle.name
    assert httpx.get(f"{server}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{server}/v2/models/{name}/ready").status_code == 200
    meta = httpx.get(f"{server}/v2/models/{name}").json()
    h, w = _input_size(bundle)
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, h, w]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    x = np.random.default_rng(0).standard_normal((2, 3, h, w), dtype=np.float32)
    body = {"id": "r1", "inputs": [{"name": "input", "shape": [2, 3, h, w], "datatype": "FP32", "data": x.tolist()}]}
    r = httpx.post(f"{server}/v2/models/{name}/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert r.json()["id"] == "r1" and out["name"] == "logits" and out["shape"] == [2, 10]
    ref = open_classifier(bundle, "onnxruntime-cpu").logits(x)
    np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(2, 10), ref, atol=1e-4)
    flat = {"inputs": [{**body["inputs"][0], "data": x.ravel().tolist()}]}
    assert httpx.post(f"{server}/v2/models/{name}/infer", json=flat).json()["outputs"][0]["data"] == out["data"]


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buf, "PNG")
    return buf.getvalue()


def test_bad_inputs_answer_4xx_and_server_stays_up(server: str, bundle: Path, images: list[Path]) -> None:
    infer = f"{server}/v2/models/{bundle.name}/infer"
    h, w = _input_size(bundle)
    classes = len((bundle / "labels.txt").read_text().splitlines())
    good = {"name": "input", "shape": [1, 3, h, w], "datatype": "FP32", "data": [0.0] * (3 * h * w)}
    jpeg = images[0].read_bytes()
    cases = [
        (httpx.post(f"{server}/predict", content=b"%PDF-1.4 not an image"), 400, "not an image"),
        (httpx.post(f"{server}/predict", content=jpeg[: len(jpeg) // 2]), 400, "truncated"),
        (httpx.post(f"{server}/predict", content=b""), 400, "empty"),
        (httpx.post(f"{server}/predict", content=_png((400, 300))), 413, "over the limit of 100000"),
        (httpx.post(f"{server}/predict", content=b"\0" * 1_100_000), 413, "over the limit"),
        (httpx.post(f"{server}/predict?top_k={classes + 1}", content=jpeg), 400, "top_k"),
        (httpx.post(f"{server}/predict", files={"other": ("x.txt", b"hi", "text/plain")}, data={"a": "b"}), 400, "file"),
        (httpx.post(infer, json={"inputs": [{**good, "shape": [1, 3, h + 1, w + 1]}]}), 400, "shape"),
        (httpx.post(infer, json={"inputs": [{**good, "datatype": "INT8"}]}), 400, "datatype"),
        (httpx.post(infer, json={"inputs": [good], "outputs": 1.0}), 400, "'outputs' must be a list"),  # found by hypothesis
        (httpx.post(infer, json={"inputs": [good], "id": 7}), 400, "'id' must be a string"),  # found by hypothesis
        (httpx.post(infer, json={"inputs": [{**good, "data": [0.0] * 10}]}), 400, "values"),
        (httpx.post(infer, json={"inputs": [{**good, "data": [str(v) for v in good["data"]]}]}), 400, "not strings"),
        (httpx.post(infer, json={"inputs": [{**good, "data": [True] * len(good["data"])}]}), 400, "not booleans"),
        (httpx.post(infer, json={"inputs": [{**good, "data": [1e39] + good["data"][1:]}]}), 400, "float32's range"),
        (httpx.post(infer, content=json.dumps({"inputs": [{**good, "data": [float("nan")] + good["data"][1:]}]})),
         400, "NaN"),
        (httpx.post(infer, json={"inputs": [{**good, "name": "pixels"}]}), 400, "unknown input"),
        (httpx.post(infer, content=b"{not json"), 400, "not JSON"),
        (httpx.post(infer, content=b"[" * 200_000 + b"]" * 200_000), 400, "nests JSON too deeply"),
        (httpx.post(f"{server}/v2/models/nope/infer", json={"inputs": [good]}), 404, "unknown model"),
        (httpx.get(f"{server}/v2/models/nope"), 404, "unknown model"),
    ]
    for response, status, words in cases:
        assert response.status_code == status, (words, response.text)
        assert words in response.json()["error"], response.text
    assert httpx.get(f"{server}/v2/health/ready").status_code == 200
    assert httpx.post(f"{server}/predict", content=jpeg).status_code == 200
    for path in ("/v2/made-up-1", "/v2/made-up-2", '/v2/x"y'):  # unknown routes: one "other" series
        response = httpx.get(f"{server}{path}")
        assert response.status_code == 404 and response.json()["error"].startswith("Not Found: GET /v2/")
    wrong_method = httpx.delete(f"{server}/predict")  # the framework's errors use the documented shape too
    assert wrong_method.status_code == 405 and wrong_method.json() == {"error": "Method Not Allowed: DELETE /predict"}
    metrics = httpx.get(f"{server}/metrics").text
    assert "made-up" not in metrics and 'x"y' not in metrics and 'endpoint="other",status="404"' in metrics


def _flood(bundle: Path, path: str, payload: bytes, warm_status: int, **limits: float) -> tuple[list[int], float, float]:
    """A server started with ``limits`` (ServeSettings fields), warmed by one request, then sent ``payload``
    16 at once: (the 16 statuses, its peak memory above idle in kB, the bound it prints in kB)."""
    from runtime.serve.state import memory_bound_bytes
    from runtime.settings import ServeSettings
    args = [a for key, value in limits.items() for a in (f"--{key.replace('_', '-')}", str(value))]
    proc, url = start_server(bundle, *args)
    try:
        assert httpx.post(f"{url}{path}", content=payload, timeout=60).status_code == warm_status
        idle_kb = _memory_kb(proc.pid, "VmRSS")
        responses = asyncio.run(_load(f"{url}{path}", payload, total=16, concurrency=16))
        growth_kb = _memory_kb(proc.pid, "VmHWM") - idle_kb
        return [r.status_code for r in responses], growth_kb, memory_bound_bytes(ServeSettings(**limits)) / 1024
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _load(url: str, payload: bytes, total: int, concurrency: int) -> list[httpx.Response]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one() -> httpx.Response:
            async with limit:
                return await client.post(url, content=payload)
        return await asyncio.gather(*(one() for _ in range(total)))


def test_a_flood_of_worst_case_kserve_bodies_stays_within_the_documented_bound(bundle: Path) -> None:
    """1 MB KServe bodies of nested ``[0],`` items (the JSON that parses largest, about 27x its size:
    benchmarks/serve_memory.py) sent 16 at once: at most --decode-workers are parsed at a time, so the
    peak above the idle server stays within memory_bound_bytes; parsing all 16 at once (about 430 MB) would not."""
    name = json.loads((bundle / "manifest.json").read_text())["name"]
    head = '{"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": ['
    items = (1_000_000 - len(head) - 10) // 4
    payload = (head + "[0]," * (items - 1) + "[0]]}]}").encode()
    statuses, growth_kb, bound_kb = _flood(bundle, f"/v2/models/{name}/infer", payload, 400, max_pixels=1_000_000,
                                           max_queue=16, max_batch=4, max_body_mb=1, decode_workers=1, max_uploads=16)
    assert set(statuses) <= {400, 503}  # parsed and refused, or no place: never a 5xx crash
    assert growth_kb <= bound_kb, (growth_kb, bound_kb)
    assert bound_kb < 16 * 27_000  # the bound is far below all 16 parsed together


def test_load_no_5xx_no_lost_answers(server: str, images: list[Path]) -> None:
    responses = asyncio.run(_load(f"{server}/predict", images[0].read_bytes(), total=64, concurrency=16))
    assert len(responses) == 64 and [r.status_code for r in responses] == [200] * 64
    top = {r.json()["predictions"][0]["index"] for r in responses}
    assert len(top) == 1  # the same image gets the same answer whatever batch it rode in
    metrics = httpx.get(f"{server}/metrics").text
    assert 'vl2lite_requests_total{endpoint="/predict",status="200"}' in metrics
    assert "vl2lite_batch_size_bucket" in metrics and "vl2lite_queue_depth" in metrics


def test_full_queue_503_and_graceful_shutdown(bundle: Path, images: list[Path]) -> None:
    """Queue of 3 held for 1.5 s: extra requests get 503 at once; SIGTERM still answers the 3."""
    proc, url = start_server(bundle, "--max-queue", "3", "--max-batch", "16", "--max-delay-ms", "1500")
    payload = images[0].read_bytes()

    async def scenario() -> list[httpx.Response]:
        task = asyncio.create_task(_load(f"{url}/predict", payload, total=8, concurrency=8))
        await asyncio.sleep(0.7)  # all eight have arrived; three wait in the batcher
        proc.send_signal(signal.SIGTERM)
        return await task

    start = time.monotonic()
    responses = asyncio.run(scenario())
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 3 + [503] * 5, [r.text for r in responses]
    assert all("busy" in r.json()["error"] for r in responses if r.status_code == 503)
    assert proc.wait(timeout=30) == 0 and time.monotonic() - start < 10  # a drained SIGTERM is a clean stop
    out = proc.stdout.read()
    assert "stopping (SIGTERM): answering" in out and "Traceback" not in out


def _memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the server's peak memory from /proc")
@pytest.mark.parametrize("mode", ["RGBA", "F"], ids=["rgba-png", "float32-tiff"])
def test_a_flood_of_worst_case_images_stays_within_the_documented_bound(bundle: Path, tmp_path: Path, mode: str) -> None:
    """16 MP images (a small compressed file each, 64 MB once decoded as RGBA or float32, the modes that
    decode largest: benchmarks/serve_memory.py) sent 16 at once: the peak memory above the idle server
    stays within memory_bound_bytes; decoding them all at once would not."""
    rng = np.random.default_rng(0)
    pixels = np.zeros((4000, 4000, 4) if mode == "RGBA" else (4000, 4000), np.uint8 if mode == "RGBA" else np.float32)
    pixels[::97, ::89] = rng.integers(0, 256, pixels[::97, ::89].shape).astype(pixels.dtype)
    buf = io.BytesIO()
    if mode == "RGBA":
        Image.fromarray(pixels, "RGBA").save(buf, "PNG")
    else:
        Image.fromarray(pixels, "F").save(buf, "TIFF", compression="tiff_deflate")
    payload = buf.getvalue()
    statuses, growth_kb, bound_kb = _flood(bundle, "/predict", payload, 200, max_pixels=16_000_000, max_queue=16,
                                           max_batch=4, max_body_mb=1, decode_workers=1)
    assert statuses == [200] * 16
    assert growth_kb <= bound_kb, (growth_kb, bound_kb)
    assert bound_kb < 16 * 64_000  # the bound is far below all 16 decoded together
