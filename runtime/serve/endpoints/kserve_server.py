"""The KServe v2 server endpoints: metadata, liveness and readiness (readiness is 503 while draining)."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from runtime.serve.routes import endpoint
from runtime.serve.state import ServerState

SERVER_NAME = "vl2lite-runtime"


@endpoint("GET", "/v2")
async def server_metadata(request: Request, state: ServerState) -> JSONResponse:
    return JSONResponse({"name": SERVER_NAME, "version": "1", "extensions": []})


@endpoint("GET", "/v2/health/live")
async def live(request: Request, state: ServerState) -> JSONResponse:
    return JSONResponse({"live": True})


@endpoint("GET", "/v2/health/ready")
async def ready(request: Request, state: ServerState) -> JSONResponse:
    return JSONResponse({"ready": state.ready}, status_code=200 if state.ready else 503)
