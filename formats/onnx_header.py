"""The input shape of an ONNX model, read straight from its protobuf: the runtime does not install the
onnx package, and ``formats.bundle`` checks a model file against preprocessing.json before any
session is opened (a matching sha256 proves only that the file is the one export listed).
"""
from __future__ import annotations

from typing import Iterator


class NotAModel(ValueError):
    """Bytes that are not the ONNX protobuf expected; the message says what is wrong."""


def onnx_input_dims(data: bytes) -> list[int | None]:
    """The dims of an ONNX model's input, None where symbolic (a dynamic batch), read straight from
    its protobuf (ModelProto.graph.input[0].type.tensor_type.shape.dim): the runtime does not install
    the onnx package. Graph inputs that are initializers (older exporters list them too) are skipped."""
    graph = _message(memoryview(data), 7, "graph")  # ModelProto.graph
    weights = {bytes(_message(t, 8, "initializer name")) for t in _messages(graph, 5)}  # GraphProto.initializer
    inputs = [v for v in _messages(graph, 11) if bytes(_message(v, 1, "input name")) not in weights]
    if not inputs:
        raise NotAModel("its graph has no input")
    tensor = _message(_message(inputs[0], 2, "input type"), 1, "input tensor type")  # ValueInfoProto.type.tensor_type
    return [_dim(d) for d in _messages(_message(tensor, 2, "input shape"), 1)]  # TensorShapeProto.dim


def _dim(dim: memoryview) -> int | None:
    """TensorShapeProto.Dimension: dim_value (field 1, an int64) or dim_param (field 2, a name)."""
    values = [v for number, v in _fields(dim) if number == 1 and isinstance(v, int)]
    if not values:
        return None
    return values[-1] - (1 << 64) if values[-1] >= 1 << 63 else values[-1]  # int64 two's complement


def _messages(buf: memoryview, number: int) -> list[memoryview]:
    """Every length-delimited field ``number`` of the message ``buf`` (a repeated sub-message)."""
    return [v for n, v in _fields(buf) if n == number and isinstance(v, memoryview)]


def _message(buf: memoryview, number: int, what: str) -> memoryview:
    """The length-delimited field ``number`` of ``buf`` (the last, should a writer repeat it)."""
    found = _messages(buf, number)
    if not found:
        raise NotAModel(f"no {what}")
    return found[-1]


def _fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of each field of one protobuf message: an int, or the bytes of a
    length-delimited field (a sub-message, a string or packed numbers)."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if number == 0 or wire not in (0, 1, 2, 5):
            raise NotAModel(f"invalid protobuf field key {key}")
        if wire == 0:
            value, i = _varint(buf, i)
            yield number, value
            continue
        size = {1: 8, 5: 4}.get(wire)
        if size is None:
            size, i = _varint(buf, i)
        if i + size > len(buf):
            raise NotAModel("a field runs past the end of the file: it is truncated or not protobuf")
        value = buf[i:i + size] if wire == 2 else int.from_bytes(buf[i:i + size], "little")
        yield number, value
        i += size


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    """The protobuf varint at ``i`` and the index after it."""
    value = shift = 0
    while i < len(buf) and shift < 70:
        byte = buf[i]
        value, shift, i = value | (byte & 0x7F) << shift, shift + 7, i + 1
        if byte < 0x80:
            return value, i
    raise NotAModel("a number runs past the end of the file: it is truncated or not protobuf")
