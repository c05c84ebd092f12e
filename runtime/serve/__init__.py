"""HTTP inference server: ``python -m runtime.serve <bundle> [--host 127.0.0.1] [--port 8000]``.

Starlette on uvicorn (Starlette alone: FastAPI's request models are not used, and importing it
took 0.30 s against Starlette's 0.11 s, a large share of a 0.5 s cold start). Endpoints
(runtime.serve.endpoints, one module per group; a new one is one new file there: runtime.serve.routes):

- ``POST /predict[?top_k=5]``: an image as the raw body or as a multipart ``file`` field;
  answers ``{"model", "artifact", "predictions": [{"label", "index", "probability"}]}``.
- KServe v2 / Triton HTTP protocol: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/<name>``, ``/v2/models/<name>/ready``, ``POST /v2/models/<name>/infer`` with
  JSON tensors (input ``FP32 [N,3,H,W]``, flat or nested data; output ``logits FP32 [N,C]``).
- ``GET /metrics``: Prometheus text format (prometheus_client, runtime.serve.metrics).

Every inference goes through one dynamic batcher (``--max-batch``, ``--max-delay-ms``) with a
bounded queue (``--max-queue``; full -> 503). Bad input answers 4xx with ``{"error": ...}``: not
an image or truncated (400), over ``--max-pixels`` (413), body over ``--max-body-mb`` (413), wrong
tensor shape/datatype (400), unknown model or route (404), wrong method (405), body not all sent
within ``--body-timeout-s`` (408, connection closed); a client that disconnects before its request
is read is counted as 499 in the metrics. Bodies being received (``--max-uploads``) and requests
in flight (whole bodies being decoded, queued or run: ``--max-queue`` + ``--max-batch``) are
bounded apart, so slow uploads cannot take the places of requests ready to run. At most
``--decode-workers`` images are decoded at once, so the memory requests hold is bounded
(``runtime.serve.state.memory_bound_bytes``, printed at startup). On SIGTERM the
server drains (readiness 503, no new connections, requests in flight and queued answered, uploads
given at most their body timeout) and exits 0; SIGINT drains the same way.
Binds to loopback unless ``--host`` says otherwise.

Modules: ``app`` (the app, its errors and request metrics), ``server`` (uvicorn, draining),
``routes`` (the endpoint registry), ``state`` (what the parts share, the memory bound), ``intake``
(body limits, images, admission, batching), ``kserve`` (the v2 tensors and metadata), ``batcher``,
``metrics``. The settings are ``runtime.settings.ServeSettings``; the command line is ``__main__``.
"""
from runtime.serve.app import create_app
from runtime.serve.server import serve

__all__ = ["create_app", "serve"]
