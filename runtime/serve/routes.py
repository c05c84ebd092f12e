"""The server's endpoints: a registry of (method, path, handler), filled by ``@endpoint``.

Every module of ``runtime.serve.endpoints`` is imported when an app is built, and each registers
its routes as it is imported; so a new endpoint is one new file there::

    from runtime.serve.routes import endpoint

    @endpoint("GET", "/v2/models/{name}/stats")
    async def stats(request: Request, state: ServerState) -> Response: ...

A module imported before ``create_app`` registers the same way (a plugin of a deployment). A path
and method registered twice is an error naming both handlers. The metrics' ``endpoint`` label is
one of the registered path templates, or ``other``.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, compile_path

import runtime.serve.endpoints as builtin
from runtime.serve.state import ServerState

Handler = Callable[[Request, ServerState], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    method: str  # GET, POST, ...
    path: str  # a Starlette path template, e.g. "/v2/models/{name}/infer"
    handler: Handler

    @property
    def where(self) -> str:
        return f"{self.handler.__module__}.{self.handler.__qualname__}"


_ENDPOINTS: dict[tuple[str, str], Endpoint] = {}


def endpoint(method: str, path: str) -> Callable[[Handler], Handler]:
    """Register the decorated ``async def handler(request, state)`` for ``method`` on ``path``."""
    def register(handler: Handler) -> Handler:
        new = Endpoint(method.upper(), path, handler)
        old = _ENDPOINTS.get((new.method, path))
        if old is not None and old.where != new.where:
            raise ValueError(f"{new.method} {path} is registered twice: by {old.where} and {new.where}")
        _ENDPOINTS[new.method, path] = new
        return handler
    return register


def endpoints() -> list[Endpoint]:
    """Every registered endpoint, the built-in ones (runtime.serve.endpoints) imported first."""
    for module in pkgutil.iter_modules(builtin.__path__):
        importlib.import_module(f"runtime.serve.endpoints.{module.name}")
    return list(_ENDPOINTS.values())


def routes(state: ServerState) -> list[Route]:
    """One Starlette route per path, each handler given the server's state."""
    by_path: dict[str, list[Endpoint]] = {}
    for e in endpoints():
        by_path.setdefault(e.path, []).append(e)
    return [Route(e.path, _bound(e.handler, state), methods=[e.method], name=f"{e.method} {e.path}")
            for path in by_path for e in by_path[path]]


def _bound(handler: Handler, state: ServerState) -> Callable[[Request], Awaitable[Response]]:
    async def call(request: Request) -> Response:
        return await handler(request, state)
    return call


class EndpointLabel:
    """A request path -> its route template for the metrics' label, or "other": a fixed set of values."""

    def __init__(self, templates: list[str]) -> None:
        self._patterns = [(compile_path(t)[0], t) for t in dict.fromkeys(templates)]

    def __call__(self, path: str) -> str:
        return next((t for pattern, t in self._patterns if pattern.match(path)), "other")


def endpoint_label() -> EndpointLabel:
    return EndpointLabel([e.path for e in endpoints()])

