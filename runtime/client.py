"""A small Python client of ``python -m runtime.serve``: the standard library's urllib, numpy and
Pillow; no torch, no HTTP package::

    from runtime.client import Client
    client = Client("http://127.0.0.1:8000", bundle="bundles/demo")
    client.predict("bird.jpg", top_k=3)   # POST /predict with the image as sent: the server preprocesses
    client.infer(["a.jpg", "b.jpg"])      # KServe v2: preprocessed here, logits (N, C) back
    client.classify(["a.jpg"], top_k=3)   # infer, then softmax and the bundle's labels

``infer`` preprocesses with the code the runtime itself runs (``formats.preprocessing.load_input``,
decoded as ``runtime.model.decode_mode`` says for the bundle), so nobody writes the preprocessing by
hand; it needs the bundle folder, checked against the server's model (name, input, labels). A 4xx or
5xx answer raises ``ServerError`` with the server's ``{"error": ...}`` text; a server that cannot be
reached raises ``UserError`` naming the address.
"""
from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
from PIL import Image

from formats.bundle import Bundle, load_bundle
from formats.errors import UserError
from formats.preprocessing import load_input
from runtime.model import Prediction, decode_mode, top_k_predictions

ImageInput = Union[str, Path, bytes, Image.Image]  # a file, its encoded bytes, or a decoded image


class ServerError(UserError):
    """The server answered 4xx or 5xx: ``status`` and its ``{"error": ...}`` text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"server answered {status}: {message}")
        self.status, self.message = status, message


@dataclass(frozen=True)
class PredictAnswer:
    """``POST /predict``'s answer."""

    model: str  # the bundle's name
    artifact: str  # the bundle file that ran, e.g. "model.int8.onnx"
    predictions: tuple[Prediction, ...]  # best first


class Client:
    """One server; ``bundle``: the bundle folder it serves, needed by ``infer`` and ``classify``."""

    def __init__(self, url: str, bundle: str | Path | Bundle | None = None, timeout_s: float = 30.0,
                 decode: str = "auto") -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s
        self.bundle = bundle if isinstance(bundle, Bundle) or bundle is None else load_bundle(bundle, artifacts=False)
        self.decode = decode_mode(self.bundle, decode) if self.bundle is not None else decode
        self._max_batch: int | None = None  # the server's, from its model metadata (first infer)

    def predict(self, image: ImageInput, top_k: int = 5) -> PredictAnswer:
        """The server's top-k for one image, sent as it is (a decoded image as PNG)."""
        answer = self._call("POST", f"/predict?top_k={int(top_k)}", _encoded(image), "application/octet-stream")
        preds = tuple(Prediction(p["label"], int(p["index"]), float(p["probability"])) for p in answer["predictions"])
        return PredictAnswer(answer["model"], answer["artifact"], preds)

    def infer(self, images: Sequence[ImageInput] | np.ndarray) -> np.ndarray:
        """Logits (N, C) float32 over KServe v2, the images preprocessed here as the runtime does;
        an array (N, 3, H, W) is taken as already preprocessed. Split at the server's max batch."""
        x = images if isinstance(images, np.ndarray) else self.preprocess(images)  # (N, 3, H, W)
        if not len(x):
            raise UserError("infer needs at least one image")
        step = self._server_max_batch()
        return np.concatenate([self._infer(x[i:i + step]) for i in range(0, len(x), step)])  # (N, C)

    def classify(self, images: Sequence[ImageInput], top_k: int = 5) -> list[list[Prediction]]:
        """Top-k per image (softmax over ``infer``'s logits, the bundle's labels)."""
        return top_k_predictions(self.infer(images), self._need_bundle().labels, top_k)

    def preprocess(self, images: Sequence[ImageInput]) -> np.ndarray:
        """float32 (N, 3, H, W): the bundle's preprocessing, the runtime's own code."""
        spec = self._need_bundle().preprocessing
        # a decoded image goes through the same bytes as predict sends (PNG), so both see one input
        rows = [load_input(_encoded(img) if isinstance(img, Image.Image) else img, spec, decode=self.decode)
                for img in images]
        return np.stack(rows).astype(np.float32, copy=False)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        b = self._need_bundle()
        body = {"inputs": [{"name": b.input_name, "shape": list(x.shape), "datatype": "FP32",
                            "data": x.ravel().tolist()}]}  # float32 -> Python floats: exact
        answer = self._call("POST", f"/v2/models/{b.name}/infer", json.dumps(body).encode(), "application/json")
        out = answer["outputs"][0]
        return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])  # (n, C)

    def _server_max_batch(self) -> int:
        """The server's rows per request, read once from its model metadata, which is checked against the bundle."""
        if self._max_batch is None:
            b = self._need_bundle()
            meta = self._call("GET", f"/v2/models/{b.name}")
            h, w = b.preprocessing.input_size
            if meta["inputs"][0]["shape"] != [-1, 3, h, w] or meta["parameters"].get("labels") != list(b.labels):
                raise UserError(f"the server at {self.url} serves another model than bundle {b.root} (input "
                                f"{meta['inputs'][0]['shape']}, {len(meta['parameters'].get('labels') or [])} labels): "
                                f"pass the bundle folder the server was started with")
            self._max_batch = int(meta["parameters"]["max_batch_size"])
        return self._max_batch

    def _need_bundle(self) -> Bundle:
        if self.bundle is None:
            raise UserError("infer and classify preprocess on this side and need the bundle folder: "
                            "Client(url, bundle='path/to/bundle'); predict sends the image as it is")
        return self.bundle

    def _call(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> Any:
        headers = {"Content-Type": content_type} if content_type else {}
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ServerError(exc.code, _error_text(exc)) from None
        except urllib.error.URLError as exc:
            reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
            raise UserError(f"cannot reach the server at {self.url} ({reason}): is python -m runtime.serve "
                            f"running there?") from None
        except TimeoutError:
            raise UserError(f"the server at {self.url} did not answer {method} {path.split('?')[0]} within "
                            f"{self.timeout_s:g} s: raise timeout_s, or check the server") from None


def _error_text(exc: urllib.error.HTTPError) -> str:
    """The ``{"error": ...}`` text of an answer, else its body as text."""
    raw = exc.read()
    try:
        return str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return raw.decode("utf-8", "replace").strip() or exc.reason


def _encoded(image: ImageInput) -> bytes:
    """The bytes to send: a file's, the bytes given, or a decoded image as PNG (lossless)."""
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, "PNG")
        return buf.getvalue()
    if isinstance(image, bytes):
        return image
    path = Path(image)
    if not path.is_file():
        raise UserError(f"image {path} not found")
    return path.read_bytes()
