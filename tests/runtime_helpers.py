"""Real images and a real server process for the runtime tests.

The bundle itself comes from the real export of a trained student (``exported_bundle`` in
tests/conftest.py).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PRE = {"input_size": [64, 64], "resize_size": 73, "resize_policy": "shorter_side", "crop": "center",
       "interpolation": "bilinear", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
       "color": "RGB", "layout": "NCHW", "scale": 255.0}


def doctored(bundle: Path, out: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of ``bundle`` whose manifest ``edit`` changed per artifact entry. The model files are
    linked, not copied; the manifest is in no checksum (it lists them), so the copy still verifies."""
    out.mkdir()
    for item in bundle.iterdir():
        if item.name != "manifest.json":
            (out / item.name).symlink_to(item.resolve(), target_is_directory=item.is_dir())
    manifest = json.loads((bundle / "manifest.json").read_text())
    for art in manifest["artifacts"]:
        edit(art)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def make_images(root: Path) -> list[Path]:
    """Real image files in the formats and modes a device sees: JPEG, PNG, grayscale, RGBA, palette."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    specs = [("wide.jpg", (120, 80), "RGB"), ("tall.png", (57, 131), "RGB"), ("gray.jpg", (90, 90), "L"),
             ("alpha.png", (100, 64), "RGBA"), ("palette.png", (75, 99), "P"), ("small.jpg", (40, 52), "RGB")]
    paths = []
    for name, (w, h), mode in specs:
        base = _smooth_image(rng, w, h)
        img = Image.fromarray(base).convert(mode) if mode != "RGBA" else _with_alpha(base, rng)
        img.save(root / name, **({"quality": 90} if name.endswith(".jpg") else {}))
        paths.append(root / name)
    return paths


def _smooth_image(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Gradients plus noise: natural-looking content that resizing filters actually change."""
    yy, xx = np.mgrid[0:h, 0:w]
    chans = [np.sin(xx / rng.uniform(3, 15) + c) * np.cos(yy / rng.uniform(3, 15)) for c in range(3)]
    img = (np.stack(chans, -1) * 100 + 128 + rng.normal(0, 12, (h, w, 3)))
    return np.clip(img, 0, 255).astype(np.uint8)


def _with_alpha(rgb: np.ndarray, rng: np.random.Generator) -> Image.Image:
    alpha = rng.integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bundle: Path, *args: str, port: int | None = None, timeout: float = 60.0,
                 plugin: Path | None = None) -> tuple[subprocess.Popen, str]:
    """A real ``python -m runtime.serve`` process on loopback, returned once /v2/health/ready answers 200.
    ``plugin``: a module file the server process imports first (an endpoint of a deployment)."""
    import httpx
    port = port or free_port()
    launch = ["-m", "runtime.serve"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if plugin is not None:  # the same command line, with the plugin imported before it runs
        launch = ["-c", f"import {plugin.stem}; from runtime.serve.__main__ import main; main()"]
        env["PYTHONPATH"] = os.pathsep.join([str(plugin.parent), str(REPO)])
    cmd = [sys.executable, *launch, str(bundle), "--port", str(port), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1.0).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server did not become ready in {timeout} s: {proc.stdout.read()}")
