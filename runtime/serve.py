"""HTTP inference server: ``python -m runtime.serve <bundle> [--host 127.0.0.1] [--port 8000]``.

Starlette on uvicorn (Starlette alone: FastAPI's request models are not used, and importing it
took 0.30 s against Starlette's 0.11 s, a large share of a 0.5 s cold start). Endpoints:

- ``POST /predict[?top_k=5]``: an image as the raw body or as a multipart ``file`` field;
  answers ``{"model", "artifact", "predictions": [{"label", "index", "probability"}]}``.
- KServe v2 / Triton HTTP protocol: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/<name>``, ``/v2/models/<name>/ready``, ``POST /v2/models/<name>/infer`` with
  JSON tensors (input ``FP32 [N,3,H,W]``, flat or nested data; output ``logits FP32 [N,C]``).
- ``GET /metrics``: Prometheus text format.

Every inference goes through one dynamic batcher (``--max-batch``, ``--max-delay-ms``) with a
bounded queue (``--max-queue``; full -> 503). Bad input answers 4xx with ``{"error": ...}``: not
an image or truncated (400), over ``--max-pixels`` (413), body over ``--max-body-mb`` (413), wrong
tensor shape/datatype (400), unknown model or route (404), wrong method (405), body not all sent
within ``--body-timeout-s`` (408, connection closed); a client that disconnects before its request
is read is counted as 499 in the metrics. Bodies being received (``--max-uploads``) and requests
in flight (whole bodies being decoded, queued or run: ``--max-queue`` + ``--max-batch``) are
bounded apart, so slow uploads cannot take the places of requests ready to run. At most
``--decode-workers`` images are decoded at once, so the memory requests hold is bounded
(``serve_state.memory_bound_bytes``, printed at startup). On SIGTERM the
server drains (readiness 503, no new connections, requests in flight and queued answered, uploads
given at most their body timeout) and exits 0; SIGINT drains the same way.
Binds to loopback unless ``--host`` says otherwise.

This module owns the app, its routes and metrics, and the CLI. The settings and shared state live
in runtime.serve_state, request intake (body limits, images, admission, batching) in
runtime.intake, the KServe v2 tensors and metadata in runtime.kserve.
"""
from __future__ import annotations

import logging
import signal
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from formats.cli import Positional, parser_for, settings_from
from formats.errors import UserError, run_cli
from runtime.backends import SessionOptions
from runtime.batcher import DynamicBatcher
from runtime.intake import admitted, decode_image, image_bytes, infer_batched, query_int, received_body
from runtime.kserve import infer_response, model_metadata_json, model_or_404, parse_infer_request
from runtime.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Metrics
from runtime.model import open_classifier, top_k_predictions
from runtime.serve_state import HttpError, ServerState, ServeSettings, memory_bound_bytes, upload_bound_bytes

SERVER_NAME = "vl2lite-runtime"
CLIENT_CLOSED = 499  # nginx's "client closed request": a client that left is not a server error
KEEP_ALIVE_S = 5  # uvicorn closes a kept-alive connection idle this long between requests (its default)
log = logging.getLogger("uvicorn.error")  # uvicorn's own log, so the line looks like its others


def create_app(bundle: str | Path, settings: ServeSettings = ServeSettings()) -> Starlette:
    """Load the model now (so the process is ready as soon as it listens) and build the app."""
    clf = open_classifier(bundle, settings.backend, settings.artifact, SessionOptions(threads=settings.threads, spin=False),
                          settings.decode)
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
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.ready = True
        yield
        state.ready = False
        await run_in_threadpool(batcher.close)  # uvicorn has finished the requests in flight

    app = Starlette(routes=_routes(state), lifespan=lifespan,
                    exception_handlers={HttpError: _http_error, StarletteHTTPException: _framework_error})
    app.add_middleware(CountRequests, metrics=metrics)
    app.state.server = state
    return app


def _metrics() -> Metrics:
    m = Metrics()
    m.describe("requests_total", "counter", "HTTP requests by endpoint and status code")
    m.describe("request_seconds", "histogram", "HTTP request latency, end to end", LATENCY_BUCKETS)
    m.describe("inference_seconds", "histogram", "model execution time per batch", LATENCY_BUCKETS)
    m.describe("batch_size", "histogram", "rows per model execution", BATCH_BUCKETS)
    m.describe("queue_depth", "gauge", "requests waiting for the batcher")
    m.describe("uploads_in_progress", "gauge", "request bodies being received (bound: --max-uploads)")
    m.describe("requests_in_flight", "gauge", "requests with their whole body, being decoded, queued or run")
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


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HttpError)
    return JSONResponse({"error": exc.message}, status_code=exc.status,
                        headers={"connection": "close"} if exc.close else None)  # uvicorn then closes it


async def _framework_error(request: Request, exc: Exception) -> JSONResponse:
    """The framework's own 404, 405, ...: the same {"error"} shape as ours."""
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse({"error": f"{exc.detail}: {request.method} {request.url.path}"},
                        status_code=exc.status_code, headers=getattr(exc, "headers", None))


class CountRequests:
    """ASGI middleware: requests_total and request_seconds per endpoint and status; a client that
    disconnects before its request is read counts as status 499."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]  # an exception before the answer counts as 500

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, send_status)
        except ClientDisconnect:  # nobody to answer: one line and a 499, not a traceback and a 500
            status[0] = CLIENT_CLOSED
            log.warning("client closed the connection before its request was read (%s %s): counted as "
                        "status %d", scope["method"], _endpoint(scope["path"]), CLIENT_CLOSED)
        finally:
            endpoint = _endpoint(scope["path"])
            self.metrics.inc("requests_total", endpoint=endpoint, status=str(status[0]))
            self.metrics.observe("request_seconds", time.perf_counter() - start, endpoint=endpoint)


def _routes(state: ServerState) -> list[Route]:
    bundle = state.clf.bundle

    async def predict(request: Request) -> JSONResponse:
        top_k = query_int(request, "top_k", state.settings.top_k, 1, bundle.num_classes)
        body = await received_body(request, state)  # an upload place while it arrives, then none
        with admitted(state):  # a place in flight only once the body is whole (no await between)
            data = await image_bytes(request, body)
            del body  # a multipart body: only its file part is kept
            async with state.decode_slots:  # memory: at most --decode-workers images decoded at once
                x = await run_in_threadpool(decode_image, data, state)
            del data
            logits = await infer_batched(state, x)
        preds = top_k_predictions(logits, bundle.labels, top_k)[0]
        return JSONResponse({"model": bundle.name, "artifact": state.clf.artifact.file, "predictions": [
            {"label": p.label, "index": p.index, "probability": p.probability} for p in preds]})

    async def metrics(request: Request) -> PlainTextResponse:
        state.metrics.set("queue_depth", state.batcher.depth)
        state.metrics.set("uploads_in_progress", state.uploads)
        state.metrics.set("requests_in_flight", state.inflight)
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")

    async def server_metadata(request: Request) -> JSONResponse:
        return JSONResponse({"name": SERVER_NAME, "version": "1", "extensions": []})

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"ready": state.ready}, status_code=200 if state.ready else 503)

    async def model_metadata(request: Request) -> JSONResponse:
        model_or_404(state, request.path_params["name"])
        return JSONResponse(model_metadata_json(state))

    async def model_ready(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        model_or_404(state, name)
        return JSONResponse({"name": name, "ready": state.ready}, status_code=200 if state.ready else 503)

    async def infer(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        model_or_404(state, name)
        body = await received_body(request, state)
        with admitted(state):
            async with state.decode_slots:
                req, x = await run_in_threadpool(parse_infer_request, body, state)
            del body
            logits = await infer_batched(state, x)
        return JSONResponse(infer_response(name, req, logits, bundle.output_name))

    get, post = ["GET"], ["POST"]
    return [Route("/predict", predict, methods=post), Route("/metrics", metrics, methods=get),
            Route("/v2", server_metadata, methods=get), Route("/v2/health/live", live, methods=get),
            Route("/v2/health/ready", ready, methods=get), Route("/v2/models/{name}", model_metadata, methods=get),
            Route("/v2/models/{name}/ready", model_ready, methods=get),
            Route("/v2/models/{name}/infer", infer, methods=post)]


# --------------------------------------------------------------------------- CLI

def serve(bundle: str | Path, settings: ServeSettings = ServeSettings()) -> None:
    """Run the server until SIGINT/SIGTERM; accepted requests are finished before it exits.

    SIGTERM (what an orchestrator sends) drains: readiness answers 503 at once, no new connection
    is accepted, the requests in flight and in the batcher's queue are answered, then exit 0.
    """
    app = create_app(bundle, settings)
    state: ServerState = app.state.server
    print(f"serving {state.clf.bundle.name} ({state.clf.artifact.file} on {state.clf.session.device}, "
          f"{state.clf.decode} decoding; requests hold at most {memory_bound_bytes(settings) / 1e9:.2f} GB "
          f"above the model, {upload_bound_bytes(settings) / 1e9:.2f} GB of it uploads in progress) at "
          f"http://{settings.host}:{settings.port}", flush=True)
    if state.clf.provenance_note:  # once at start: the manifest's top-1 may not hold on this CPU
        print(state.clf.provenance_note, file=sys.stderr, flush=True)
    # No limit_concurrency: it counts open connections, idle and stalled ones too, and answers every
    # request beyond it with 503, which is what a few hundred stalled clients would then cause.
    # The app's own bounds (uploads, in flight, queue) are per stage and answer {"error": ...}.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                            timeout_keep_alive=KEEP_ALIVE_S, limit_concurrency=None)
    DrainingServer(config, state).run()


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with SIGTERM as a clean stop: not ready, drain, exit status 0."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.state.ready = False  # readiness first: a load balancer stops sending new work
        if not self.should_exit:
            print(f"stopping ({signal.Signals(sig).name}): answering {self.state.inflight} request(s) in "
                  f"flight and {self.state.uploads} upload(s) in progress (each within its body timeout), "
                  f"then exiting", flush=True)
        super().handle_exit(sig, frame)
        captured = getattr(self, "_captured_signals", [])  # uvicorn re-raises these after its shutdown
        if sig == signal.SIGTERM and sig in captured:
            captured.remove(sig)  # a requested stop that drained cleanly is a success: exit 0


def main(argv: list[str] | None = None) -> None:
    """CLI: arguments are parsed (strictly, from ServeSettings) before the bundle is opened."""
    parser = parser_for("python -m runtime.serve", __doc__.splitlines()[0], ServeSettings,
                        [Positional("bundle", "the bundle folder written by python -m export")])
    args = parser.parse_args(argv)
    run_cli(lambda: serve(args.bundle, settings_from(ServeSettings, args)))


if __name__ == "__main__":
    main()
