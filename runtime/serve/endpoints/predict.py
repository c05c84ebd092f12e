"""``POST /predict[?top_k=5]``: an image as the raw body or as a multipart ``file`` field; answers
``{"model", "artifact", "predictions": [{"label", "index", "probability"}]}``."""
from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from runtime.model import top_k_predictions
from runtime.serve.intake import admitted, decode_image, image_bytes, infer_batched, query_int, received_body
from runtime.serve.routes import endpoint
from runtime.serve.state import ServerState


@endpoint("POST", "/predict")
async def predict(request: Request, state: ServerState) -> JSONResponse:
    bundle = state.clf.bundle
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
