"""A fast network probe, torch-free, for every stage that may download weights (students, teachers).

Offline machines fail at once with instructions instead of retrying a download for minutes.
``HF_HUB_OFFLINE=1`` or ``VL2LITE_OFFLINE=1`` means offline without trying.
"""
from __future__ import annotations

import os
import socket


def reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds (False when offline is set)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("VL2LITE_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
