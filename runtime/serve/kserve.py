"""The KServe v2 / Triton HTTP inference protocol, JSON tensors only: model metadata, the model
name check (404), request parsing and validation (input ``FP32 [N,3,H,W]``, flat or nested data;
400 on any mismatch) and the response (output ``logits FP32 [N,C]``).
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from formats.isa import describe
from runtime.serve.state import HttpError, ServerState, shown


def model_or_404(state: ServerState, name: str) -> None:
    if name != state.clf.bundle.name:
        raise HttpError(404, f"unknown model {name!r}: this server serves {state.clf.bundle.name!r}")


def model_metadata_json(state: ServerState) -> dict[str, Any]:
    b = state.clf.bundle
    h, w = b.preprocessing.input_size
    platform = "tensorrt_plan" if state.clf.artifact.format == "tensorrt" else "onnxruntime_onnx"
    return {"name": b.name, "versions": ["1"], "platform": platform,
            "inputs": [{"name": b.input_name, "datatype": "FP32", "shape": [-1, 3, h, w]}],
            "outputs": [{"name": b.output_name, "datatype": "FP32", "shape": [-1, b.num_classes]}],
            "parameters": {"artifact": state.clf.artifact.file, "max_batch_size": state.settings.max_batch,
                           "decode": state.clf.decode,
                           "measured_on": describe(state.clf.artifact.measured_on),  # where its top-1 was measured
                           "labels": list(b.labels)}}


def parse_infer_request(body: bytes, state: ServerState) -> tuple[dict[str, Any], np.ndarray]:
    """A KServe v2 JSON inference request -> (request, float32 (N, 3, H, W)); 400 on any mismatch."""
    b, max_rows = state.clf.bundle, state.settings.max_batch
    try:
        req = json.loads(body)
    except RecursionError:
        raise HttpError(400, "request body nests JSON too deeply: send a flat KServe v2 inference request")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpError(400, f"request body is not JSON ({exc.__class__.__name__}): send a KServe v2 inference request")
    inputs = req.get("inputs") if isinstance(req, dict) else None
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise HttpError(400, f"'inputs' must be a list with one tensor named {b.input_name!r}")
    _check_id(req.get("id", ""))
    outputs = req.get("outputs") or []
    if not isinstance(outputs, list):
        raise HttpError(400, f"'outputs' must be a list of requested outputs (this model has one, {b.output_name!r})")
    for out in outputs:
        if not isinstance(out, dict) or out.get("name") != b.output_name:
            raise HttpError(400, f"unknown output requested: this model has one output, {b.output_name!r}")
    return req, _tensor(inputs[0], b.input_name, (3, *b.preprocessing.input_size), max_rows)


def _tensor(t: dict[str, Any], name: str, chw: tuple[int, ...], max_rows: int) -> np.ndarray:
    if t.get("name") != name:
        raise HttpError(400, f"unknown input {shown(t.get('name'))}: the model's input is {name!r}")
    if t.get("datatype") != "FP32":
        raise HttpError(400, f"input datatype {shown(t.get('datatype'))} is not supported: send FP32")
    shape = t.get("shape")
    expected = f"[N, {', '.join(map(str, chw))}] with 1 <= N <= {max_rows}"
    if (not isinstance(shape, list) or len(shape) != 4 or not all(_is_int(s) for s in shape)
            or tuple(shape[1:]) != chw or not 1 <= shape[0] <= max_rows):
        raise HttpError(400, f"input shape {shown(shape)} is wrong: expected {expected} (JSON integers)")
    data = _fp32_values(t.get("data"))
    if data.size != int(np.prod(shape)):
        raise HttpError(400, f"input data has {data.size} values, shape {shape} needs {int(np.prod(shape))}")
    return data.reshape(shape)


def _check_id(value: Any) -> None:
    """The request id is echoed in the response: a string that UTF-8 can carry (a JSON escape such
    as "\\ud800" decodes to a lone surrogate, which no UTF-8 response can hold)."""
    if not isinstance(value, str):
        raise HttpError(400, "'id' must be a string (it is echoed in the response)")
    if not _utf8(value):
        raise HttpError(400, f"'id' {shown(value)} holds a lone surrogate, which UTF-8 cannot carry: send an id "
                             f"of valid Unicode text (it is echoed in the response)")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_int(value: Any) -> bool:
    """A JSON integer: ``true`` and ``false`` load as bool, a subclass of int, and are not sizes."""
    return isinstance(value, int) and not isinstance(value, bool)


FP32_MAX = float(np.finfo(np.float32).max)


def _fp32_values(data: Any) -> np.ndarray:
    """JSON numbers -> float32; strings, booleans, NaN, infinities and values past float32's range are 400."""
    try:
        raw = np.asarray(data)  # no dtype: strings stay strings instead of being parsed
    except (TypeError, ValueError):  # ragged nesting
        raise HttpError(400, "input data must be numbers, as a flat or nested list of one shape") from None
    if raw.dtype.kind not in "iuf":  # "U" strings, "b" booleans, "O" mixed or null
        raise HttpError(400, f"input data must be JSON numbers (FP32), not {_kind(raw)}")
    values = raw.astype(np.float64)
    if not np.isfinite(values).all() or (np.abs(values) > FP32_MAX).any():
        raise HttpError(400, "input data holds NaN, an infinity or a value beyond float32's range: send finite "
                             "FP32 values (preprocessed pixels are small numbers)")
    return values.astype(np.float32)


def _kind(raw: np.ndarray) -> str:
    return {"U": "strings", "S": "strings", "b": "booleans"}.get(raw.dtype.kind, "a mix of values or nulls")


def infer_response(name: str, req: dict[str, Any], logits: np.ndarray, output_name: str) -> dict[str, Any]:
    """The v2 inference response for ``logits`` (N, C), echoing the request's id."""
    if not np.isfinite(logits).all():  # JSON has no NaN or infinity: inputs near float32's limit overflow
        raise HttpError(400, "the model's output for this input is not finite (its values overflow float32 in "
                             "the model): send preprocessed pixels, the small numbers preprocessing.json makes")
    return {"model_name": name, "model_version": "1", "id": req.get("id", ""),
            "outputs": [{"name": output_name, "datatype": "FP32", "shape": list(logits.shape),
                         "data": logits.ravel().tolist()}]}
