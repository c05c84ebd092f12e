"""``GET /metrics``: every series of the server's registry in the Prometheus text format (runtime.serve.metrics)."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from runtime.serve.metrics import CONTENT_TYPE
from runtime.serve.routes import endpoint
from runtime.serve.state import ServerState


@endpoint("GET", "/metrics")
async def metrics(request: Request, state: ServerState) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
