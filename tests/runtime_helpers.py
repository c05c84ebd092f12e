"""Small real bundles and real images for the runtime tests, built once per test session.

``build_bundle`` is the one place that makes a bundle: today it exports a random-weight torchvision
student itself (docs/bundle.md layout); swap its body for ``export.api.export_bundle`` once the
export package lands. The tests only rely on the bundle contract.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from distill.synthetic import species
from runtime.dataset import clean_class_name

REPO = Path(__file__).resolve().parents[1]
# Class names as training writes them for the synthetic birds (cleaned CUB folder names).
LABELS = [clean_class_name(name) for name, _ in species(5)]
PRE = {"input_size": [64, 64], "resize_size": 73, "resize_policy": "shorter_side", "crop": "center",
       "interpolation": "bilinear", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
       "color": "RGB", "layout": "NCHW", "scale": 255.0}
_CACHE: dict[str, Path] = {}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_bundle(out: Path, arch: str = "resnet18", labels: list[str] = LABELS, pre: dict = PRE,
                 int8: bool = False, max_batch: int = 32, seed: int = 0) -> Path:
    """Export a random-weight student to ``out`` as a bundle: model.onnx (+ model.int8.onnx)."""
    import torch
    from distill.students import create_student

    torch.manual_seed(seed)
    model = create_student(arch, num_classes=len(labels), weights="none").eval()
    out.mkdir(parents=True, exist_ok=True)
    h, w = pre["input_size"]
    example = torch.randn(2, 3, h, w)
    torch.onnx.export(model, (example,), str(out / "model.onnx"), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    (out / "labels.txt").write_text("".join(f"{name}\n" for name in labels))
    (out / "preprocessing.json").write_text(json.dumps(pre))
    artifacts = [_artifact(out, "model.onnx", "fp32", "any")]
    if int8:
        _quantize_u8s8(out / "model.onnx", out / "model.int8.onnx", h, w)
        artifacts.append(_artifact(out, "model.int8.onnx", "int8", "onnxruntime-cpu"))
    write_manifest(out, arch, labels, pre, artifacts, max_batch)
    return out


def _quantize_u8s8(src: Path, dst: Path, h: int, w: int) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self._batches = iter([{"input": rng.standard_normal((4, 3, h, w)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self._batches, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)


def _artifact(root: Path, file: str, precision: str, target: str) -> dict:
    path = root / file
    return {"file": file, "format": "onnx", "precision": precision, "target": target,
            "sha256": sha256(path), "size_bytes": path.stat().st_size}


def write_manifest(root: Path, arch: str, labels: list[str], pre: dict, artifacts: list[dict], max_batch: int) -> None:
    h, w = pre["input_size"]
    manifest = {
        "schema": "vl2lite-bundle", "schema_version": 1,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "name": root.name, "arch": arch, "num_classes": len(labels),
        "input": {"name": "input", "shape": [-1, 3, h, w], "dtype": "float32"},
        "output": {"name": "logits", "shape": [-1, len(labels)], "dtype": "float32"},
        "max_batch": max_batch, "labels": "labels.txt", "preprocessing": "preprocessing.json",
        "artifacts": artifacts,
        "files": {name: sha256(root / name) for name in ("labels.txt", "preprocessing.json")},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))


def shared_bundle(tmp_path_factory, name: str = "tiny", **kwargs) -> Path:
    """One bundle per (name, session), shared by every test module that asks for it."""
    if name not in _CACHE:
        _CACHE[name] = build_bundle(tmp_path_factory.mktemp("bundles") / name, **kwargs)
    return _CACHE[name]


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


def start_server(bundle: Path, *args: str, port: int | None = None, timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """A real ``python -m runtime.serve`` process on loopback, returned once /v2/health/ready answers 200."""
    import httpx
    port = port or free_port()
    cmd = [sys.executable, "-m", "runtime.serve", str(bundle), "--port", str(port), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
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
