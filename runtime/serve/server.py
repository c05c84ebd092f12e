"""Running the app: uvicorn on the given host and port until SIGINT/SIGTERM, which drain."""
from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import uvicorn

from runtime.serve.app import create_app
from runtime.serve.state import ServerState, memory_bound_bytes, upload_bound_bytes
from runtime.settings import ServeSettings

KEEP_ALIVE_S = 5  # uvicorn closes a kept-alive connection idle this long between requests (its default)


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
    if state.clf.choice is not None:  # which artifact, why, and what else was within budget
        print(state.clf.choice.line, file=sys.stderr, flush=True)
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
