"""The Starlette app of one server: the model loaded, the batcher, the metrics, the registered
endpoints (runtime.serve.routes) and the error shape ``{"error": ...}`` of every answer."""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from formats.errors import UserError
from runtime.backends import SessionOptions
from runtime.model import open_classifier
from runtime.serve.batcher import DynamicBatcher
from runtime.serve.metrics import ServeMetrics
from runtime.serve.routes import EndpointLabel, endpoint_label, routes
from runtime.serve.state import HttpError, ServerState
from runtime.settings import ServeSettings

CLIENT_CLOSED = 499  # nginx's "client closed request": a client that left is not a server error
log = logging.getLogger("uvicorn.error")  # uvicorn's own log, so the line looks like its others


def create_app(bundle: str | Path, settings: ServeSettings = ServeSettings()) -> Starlette:
    """Load the model now (so the process is ready as soon as it listens) and build the app."""
    options = SessionOptions(threads=settings.threads, spin=False, verbose=settings.verbose)
    clf = open_classifier(bundle, settings.backend, settings.artifact, options, settings.decode, settings.bench)
    if settings.max_batch > clf.bundle.max_batch:
        raise UserError(f"--max-batch {settings.max_batch} is over the bundle's max_batch "
                        f"{clf.bundle.max_batch}: pass --max-batch {clf.bundle.max_batch} or less")
    metrics = ServeMetrics()
    batcher = DynamicBatcher(clf.session.run, settings.max_batch, settings.max_delay_ms / 1e3, settings.max_queue,
                             metrics.batch)
    state = ServerState(clf, batcher, metrics, settings)
    metrics.watch(lambda: batcher.depth, lambda: state.uploads, lambda: state.inflight)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.ready = True
        yield
        state.ready = False
        await run_in_threadpool(batcher.close)  # uvicorn has finished the requests in flight

    app = Starlette(routes=routes(state), lifespan=lifespan,
                    exception_handlers={HttpError: _http_error, StarletteHTTPException: _framework_error})
    app.add_middleware(CountRequests, metrics=metrics, label=endpoint_label())
    app.state.server = state
    return app


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

    def __init__(self, app: ASGIApp, metrics: ServeMetrics, label: EndpointLabel) -> None:
        self.app, self.metrics, self.label = app, metrics, label

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
                        "status %d", scope["method"], self.label(scope["path"]), CLIENT_CLOSED)
        finally:
            self.metrics.request(self.label(scope["path"]), status[0], time.perf_counter() - start)
