"""The server's endpoint registry: the built-in routes, one new module = one new endpoint, served
over real HTTP on loopback (and counted in /metrics under its route template)."""
from __future__ import annotations

import pkgutil
import signal
from pathlib import Path

import httpx
import pytest
from starlette.responses import JSONResponse

import runtime.serve.endpoints
from formats.bundle import load_bundle
from runtime.serve.routes import EndpointLabel, endpoint, endpoints
from tests.runtime_helpers import start_server

BUILT_IN = {("POST", "/predict"), ("GET", "/metrics"), ("GET", "/v2"), ("GET", "/v2/health/live"),
            ("GET", "/v2/health/ready"), ("GET", "/v2/models/{name}"), ("GET", "/v2/models/{name}/ready"),
            ("POST", "/v2/models/{name}/infer")}

TOY = '''"""A deployment's own endpoint: this file is all it takes."""
from starlette.responses import JSONResponse

from runtime.serve.routes import endpoint


@endpoint("GET", "/v2/models/{name}/toy")
async def toy(request, state):
    return JSONResponse({"model": state.clf.bundle.name, "asked": request.path_params["name"],
                         "queued": state.batcher.depth})
'''


def test_every_built_in_module_registers_and_every_route_is_documented() -> None:
    registered = endpoints()
    assert {(e.method, e.path) for e in registered} >= BUILT_IN  # docs/runtime.md lists these
    modules = {f"runtime.serve.endpoints.{m.name}" for m in pkgutil.iter_modules(runtime.serve.endpoints.__path__)}
    silent = modules - {e.handler.__module__ for e in registered}
    assert not silent, f"endpoint modules that register no route: {sorted(silent)}"


def test_a_route_registered_twice_names_both_handlers() -> None:
    async def other_predict(request, state) -> JSONResponse:
        return JSONResponse({})
    with pytest.raises(ValueError, match="POST /predict is registered twice: by runtime.serve.endpoints.predict.predict "
                                         "and .*other_predict"):
        endpoint("post", "/predict")(other_predict)
    assert {e.handler.__name__ for e in endpoints() if e.path == "/predict"} == {"predict"}  # nothing replaced


def test_the_metrics_label_is_a_route_template_or_other() -> None:
    label = EndpointLabel(["/predict", "/v2/models/{name}", "/v2/models/{name}/infer"])
    assert label("/v2/models/demo/infer") == "/v2/models/{name}/infer" and label("/v2/models/x") == "/v2/models/{name}"
    assert [label(p) for p in ("/v2/models/a/b/infer", "/predict/", '/v2/x"y', "/")] == ["other"] * 4


def test_a_toy_endpoint_in_one_new_module_is_served(exported_bundle: Path, tmp_path: Path) -> None:
    plugin = tmp_path / "toy_endpoint.py"
    plugin.write_text(TOY)
    proc, url = start_server(exported_bundle, plugin=plugin)
    try:
        name = load_bundle(exported_bundle).name
        answer = httpx.get(f"{url}/v2/models/{name}/toy")
        assert answer.status_code == 200 and answer.json() == {"model": name, "asked": name, "queued": 0}
        wrong = httpx.post(f"{url}/v2/models/{name}/toy")  # registered for GET only
        assert wrong.status_code == 405 and wrong.json()["error"].startswith("Method Not Allowed")
        metrics = httpx.get(f"{url}/metrics").text
        assert 'vl2lite_requests_total{endpoint="/v2/models/{name}/toy",status="200"} 1.0' in metrics
        assert httpx.post(f"{url}/predict", content=b"").status_code == 400  # the built-in ones still there
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
