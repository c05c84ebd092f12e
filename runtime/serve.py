"""HTTP inference server: ``python -m runtime.serve <bundle> [--host 127.0.0.1] [--port 8000]``.

FastAPI on uvicorn. Endpoints:

- ``POST /predict[?top_k=5]``: an image as the raw body or as a multipart ``file`` field;
  answers ``{"model", "artifact", "predictions": [{"label", "index", "probability"}]}``.
- KServe v2 / Triton HTTP protocol: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/<name>``, ``/v2/models/<name>/ready``, ``POST /v2/models/<name>/infer`` with
  JSON tensors (input ``FP32 [N,3,H,W]``, flat or nested data; output ``logits FP32 [N,C]``).
- ``GET /metrics``: Prometheus text format.

Every inference goes through one dynamic batcher (``--max-batch``, ``--max-delay-ms``) with a
bounded queue (``--max-queue``; full -> 503). Bad input answers 4xx with ``{"error": ...}``: not
an image or truncated (400), over ``--max-pixels`` (413), body over ``--max-body-mb`` (413), wrong
tensor shape/datatype (400), unknown model (404). On SIGINT/SIGTERM uvicorn stops accepting
connections, finishes the requests in flight, then the batcher drains its queue.
Binds to loopback unless ``--host`` says otherwise.
"""
from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from runtime.backends import SessionOptions
from runtime.batcher import DynamicBatcher, QueueFull, ShuttingDown
from formats.cli import Positional, parser_for, settings_from
from formats.errors import UserError, run_cli
from runtime.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Metrics
from runtime.model import Classifier, open_classifier, top_k_predictions
from formats.preprocessing import DEFAULT_MAX_PIXELS, ImageError, open_image, preprocess_image

SERVER_NAME = "vl2lite-runtime"


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

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise UserError(f"--port must be 1..65535, got {self.port}")
        if self.max_batch < 1 or self.max_queue < 1 or self.max_delay_ms < 0:
            raise UserError("--max-batch and --max-queue must be >= 1, --max-delay-ms >= 0")
        if self.max_body_mb <= 0 or self.max_pixels < 1 or self.top_k < 1:
            raise UserError("--max-body-mb, --max-pixels and --top-k must be positive")


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class ServerState:
    clf: Classifier
    batcher: DynamicBatcher
    metrics: Metrics
    settings: ServeSettings
    ready: bool = False
    inflight: int = 0  # requests being read, decoded, queued or run (touched on the event loop only)


def create_app(bundle: str | Path, settings: ServeSettings = ServeSettings()) -> FastAPI:
    """Load the model now (so the process is ready as soon as it listens) and build the app."""
    clf = open_classifier(bundle, settings.backend, settings.artifact, SessionOptions(threads=settings.threads, spin=False))
    if settings.max_batch > clf.bundle.max_batch:
        raise UserError(f"--max-batch {settings.max_batch} is over the bundle's max_batch "
                               f"{clf.bundle.max_batch}: pass --max-batch {clf.bundle.max_batch} or less")
    metrics = _metrics()

    def on_batch(rows: int, seconds: float) -> None:
        metrics.observe("batch_size", rows)
        metrics.observe("inference_seconds", seconds)

    batcher = DynamicBatcher(clf.session.run, settings.max_batch, settings.max_delay_ms / 1e3, settings.max_queue,
                             on_batch)
    state = ServerState(clf, batcher, metrics, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.ready = True
        yield
        state.ready = False
        await run_in_threadpool(batcher.close)  # uvicorn has finished the requests in flight

    app = FastAPI(title=SERVER_NAME, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state
    _add_handlers(app, state)
    _add_routes(app, state)
    return app


def _metrics() -> Metrics:
    m = Metrics()
    m.describe("requests_total", "counter", "HTTP requests by endpoint and status code")
    m.describe("request_seconds", "histogram", "HTTP request latency, end to end", LATENCY_BUCKETS)
    m.describe("inference_seconds", "histogram", "model execution time per batch", LATENCY_BUCKETS)
    m.describe("batch_size", "histogram", "rows per model execution", BATCH_BUCKETS)
    m.describe("queue_depth", "gauge", "requests waiting for the batcher")
    return m


ROUTES = ("/predict", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}",
          "/v2/models/{name}/ready", "/v2/models/{name}/infer")


def _endpoint(path: str) -> str:
    """The route template for metric labels: a fixed set, so no request can create new series."""
    parts = path.split("/")
    if path.startswith("/v2/models/") and len(parts) > 3:
        parts[3] = "{name}"
    template = "/".join(parts)
    return template if template in ROUTES else "other"


def _add_handlers(app: FastAPI, state: ServerState) -> None:
    @app.exception_handler(HttpError)
    async def http_error(request: Request, exc: HttpError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        endpoint = _endpoint(request.url.path)
        state.metrics.inc("requests_total", endpoint=endpoint, status=str(response.status_code))
        state.metrics.observe("request_seconds", time.perf_counter() - start, endpoint=endpoint)
        return response


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _image_bytes(request: Request, limit: int) -> bytes:
    """The raw body, or the ``file`` part (else the first file part) of a multipart form."""
    body = await read_body(request, limit)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=4, max_fields=16)
    upload = form.get("file") or next((v for v in form.values() if hasattr(v, "read")), None)
    if upload is None or not hasattr(upload, "read"):
        raise HttpError(400, "multipart request has no file part: send the image as field 'file'")
    return await upload.read()


@contextmanager
def _admitted(state: ServerState) -> Iterator[None]:
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


async def _infer(state: ServerState, x: np.ndarray) -> np.ndarray:
    try:
        future = state.batcher.submit(x)
    except QueueFull:
        raise HttpError(503, f"server busy: {state.batcher.max_queue} requests are queued; retry later") from None
    except ShuttingDown:
        raise HttpError(503, "server is shutting down") from None
    finally:
        state.metrics.set("queue_depth", state.batcher.depth)
    return await asyncio.wrap_future(future)


def _decode(data: bytes, state: ServerState) -> np.ndarray:
    if not data:
        raise HttpError(400, "empty request body: send an image (JPEG, PNG, ...)")
    try:
        img = open_image(data, state.settings.max_pixels)
    except ImageError as exc:
        raise HttpError(exc.status, str(exc)) from None
    return preprocess_image(img, state.clf.bundle.preprocessing)[None]  # (1, 3, H, W)


def _query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise HttpError(400, f"query parameter {name} must be a whole number in {low}..{high}, got {raw!r}")
    return int(raw)


def _model_or_404(state: ServerState, name: str) -> None:
    if name != state.clf.bundle.name:
        raise HttpError(404, f"unknown model {name!r}: this server serves {state.clf.bundle.name!r}")


def _add_routes(app: FastAPI, state: ServerState) -> None:
    bundle, limit = state.clf.bundle, int(state.settings.max_body_mb * 1e6)

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        top_k = _query_int(request, "top_k", state.settings.top_k, 1, bundle.num_classes)
        with _admitted(state):
            x = await run_in_threadpool(_decode, await _image_bytes(request, limit), state)
            logits = await _infer(state, x)
        preds = top_k_predictions(logits, bundle.labels, top_k)[0]
        return {"model": bundle.name, "artifact": state.clf.artifact.file,
                "predictions": [{"label": p.label, "index": p.index, "probability": p.probability} for p in preds]}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        state.metrics.set("queue_depth", state.batcher.depth)
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": "1", "extensions": []}

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": state.ready}, status_code=200 if state.ready else 503)

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str) -> dict[str, Any]:
        _model_or_404(state, name)
        return model_metadata_json(state)

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> JSONResponse:
        _model_or_404(state, name)
        return JSONResponse({"name": name, "ready": state.ready}, status_code=200 if state.ready else 503)

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> dict[str, Any]:
        _model_or_404(state, name)
        with _admitted(state):
            body = await read_body(request, limit)
            req, x = await run_in_threadpool(parse_infer_request, body, state)
            logits = await _infer(state, x)
        return {"model_name": name, "model_version": "1", "id": req.get("id", ""),
                "outputs": [{"name": bundle.output_name, "datatype": "FP32", "shape": list(logits.shape),
                             "data": logits.ravel().tolist()}]}


def model_metadata_json(state: ServerState) -> dict[str, Any]:
    b = state.clf.bundle
    h, w = b.preprocessing.input_size
    platform = "tensorrt_plan" if state.clf.artifact.format == "tensorrt" else "onnxruntime_onnx"
    return {"name": b.name, "versions": ["1"], "platform": platform,
            "inputs": [{"name": b.input_name, "datatype": "FP32", "shape": [-1, 3, h, w]}],
            "outputs": [{"name": b.output_name, "datatype": "FP32", "shape": [-1, b.num_classes]}],
            "parameters": {"artifact": state.clf.artifact.file, "max_batch_size": state.settings.max_batch,
                           "labels": list(b.labels)}}


def parse_infer_request(body: bytes, state: ServerState) -> tuple[dict[str, Any], np.ndarray]:
    """A KServe v2 JSON inference request -> (request, float32 (N, 3, H, W)); 400 on any mismatch."""
    b, max_rows = state.clf.bundle, state.settings.max_batch
    try:
        req = json.loads(body)
    except RecursionError:
        raise HttpError(400, "request body nests JSON too deeply: send a flat KServe v2 inference request")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpError(400, f"request body is not JSON ({exc.__class__.__name__}): send a KServe v2 inference request")
    inputs = req.get("inputs") if isinstance(req, dict) else None
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise HttpError(400, f"'inputs' must be a list with one tensor named {b.input_name!r}")
    for out in req.get("outputs") or []:
        if not isinstance(out, dict) or out.get("name") != b.output_name:
            raise HttpError(400, f"unknown output requested: this model has one output, {b.output_name!r}")
    return req, _tensor(inputs[0], b.input_name, (3, *b.preprocessing.input_size), max_rows)


def _tensor(t: dict[str, Any], name: str, chw: tuple[int, ...], max_rows: int) -> np.ndarray:
    if t.get("name") != name:
        raise HttpError(400, f"unknown input {t.get('name')!r}: the model's input is {name!r}")
    if t.get("datatype") != "FP32":
        raise HttpError(400, f"input datatype {t.get('datatype')!r} is not supported: send FP32")
    shape = t.get("shape")
    expected = f"[N, {', '.join(map(str, chw))}] with 1 <= N <= {max_rows}"
    if (not isinstance(shape, list) or len(shape) != 4 or not all(isinstance(s, int) for s in shape)
            or tuple(shape[1:]) != chw or not 1 <= shape[0] <= max_rows):
        raise HttpError(400, f"input shape {shape} is wrong: expected {expected}")
    try:
        data = np.asarray(t.get("data"), dtype=np.float32)
    except (TypeError, ValueError):
        raise HttpError(400, "input data must be numbers, as a flat or nested list") from None
    if data.size != int(np.prod(shape)):
        raise HttpError(400, f"input data has {data.size} values, shape {shape} needs {int(np.prod(shape))}")
    return data.reshape(shape)


# --------------------------------------------------------------------------- CLI

def serve(bundle: str | Path, settings: ServeSettings = ServeSettings()) -> None:
    """Run the server until SIGINT/SIGTERM; accepted requests are finished before it exits."""
    import uvicorn
    app = create_app(bundle, settings)
    print(f"serving {app.state.server.clf.bundle.name} ({app.state.server.clf.artifact.file} on "
          f"{app.state.server.clf.session.device}) at http://{settings.host}:{settings.port}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)


def main(argv: list[str] | None = None) -> None:
    """CLI: arguments are parsed (strictly, from ServeSettings) before the bundle is opened."""
    parser = parser_for("python -m runtime.serve", __doc__.splitlines()[0], ServeSettings,
                        [Positional("bundle", "the bundle folder written by python -m export")])
    args = parser.parse_args(argv)
    run_cli(lambda: serve(args.bundle, settings_from(ServeSettings, args)))


if __name__ == "__main__":
    main()
