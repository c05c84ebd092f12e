"""onnxruntime's own warnings stay out of the runtime's output unless --verbose or VL2LITE_VERBOSE=1
asks for them (the CLI's stderr holding only the runtime's own lines: tests/test_runtime_choice.py)."""
from __future__ import annotations

import numpy as np
import pytest

from formats.bundle import Artifact
from runtime.backends import SessionOptions, get_backend
from runtime.backends.base import VERBOSE_ENV

CHATTER = "Removing initializer 'unused_w'"  # onnxruntime's warning for an initializer no node reads


@pytest.fixture(scope="module")
def chatty_model(tmp_path_factory) -> Artifact:
    """A real ONNX file onnxruntime warns about when it loads (an unused initializer)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3])
    unused = numpy_helper.from_array(np.ones(3, np.float32), "unused_w")
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g", [x], [y], [unused])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("chatty") / "model.onnx"
    onnx.save(model, path)
    return Artifact("model.onnx", "onnx", "fp32", "any", path, path.stat().st_size)


def test_onnxruntime_warnings_only_when_asked(chatty_model: Artifact, capfd, monkeypatch) -> None:
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    cpu = get_backend("onnxruntime-cpu")
    cpu.open(chatty_model, SessionOptions())
    assert capfd.readouterr().err == ""  # written by onnxruntime's C++ logger straight to fd 2: nothing
    cpu.open(chatty_model, SessionOptions(verbose=True))
    assert CHATTER in capfd.readouterr().err
    monkeypatch.setenv(VERBOSE_ENV, "1")  # what a bench worker inherits from --verbose
    session = cpu.open(chatty_model, SessionOptions())
    assert CHATTER in capfd.readouterr().err
    assert session.run(np.ones((2, 3), np.float32)).shape == (2, 3)
