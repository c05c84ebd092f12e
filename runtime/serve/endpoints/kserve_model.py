"""The KServe v2 model endpoints: metadata, readiness and inference on JSON tensors (runtime.serve.kserve)."""
from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from runtime.serve.intake import admitted, infer_batched, received_body
from runtime.serve.kserve import infer_response, model_metadata_json, model_or_404, parse_infer_request
from runtime.serve.routes import endpoint
from runtime.serve.state import ServerState


@endpoint("GET", "/v2/models/{name}")
async def model_metadata(request: Request, state: ServerState) -> JSONResponse:
    model_or_404(state, request.path_params["name"])
    return JSONResponse(model_metadata_json(state))


@endpoint("GET", "/v2/models/{name}/ready")
async def model_ready(request: Request, state: ServerState) -> JSONResponse:
    name = request.path_params["name"]
    model_or_404(state, name)
    return JSONResponse({"name": name, "ready": state.ready}, status_code=200 if state.ready else 503)


@endpoint("POST", "/v2/models/{name}/infer")
async def infer(request: Request, state: ServerState) -> JSONResponse:
    name = request.path_params["name"]
    model_or_404(state, name)
    body = await received_body(request, state)
    with admitted(state):
        async with state.decode_slots:
            req, x = await run_in_threadpool(parse_infer_request, body, state)
        del body
        logits = await infer_batched(state, x)
    return JSONResponse(infer_response(name, req, logits, state.clf.bundle.output_name))
