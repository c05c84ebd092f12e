"""The server's built-in endpoints, one module per group; each registers its routes with
``runtime.serve.routes.endpoint`` as it is imported (``routes.endpoints()`` imports every module here).

- ``predict``: ``POST /predict``, an image in, top-k labels out;
- ``kserve_server``: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``;
- ``kserve_model``: ``GET /v2/models/{name}``, ``/v2/models/{name}/ready``, ``POST /v2/models/{name}/infer``;
- ``metrics``: ``GET /metrics``, Prometheus text.
"""
