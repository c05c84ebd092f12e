"""What export prints: its own progress, tables and summary, and none of the libraries' chatter.

onnxruntime's calibrators print(), its quantizer logs through the root logger, its C++ core logs
graph warnings, torch.onnx warns: ``export.quiet`` keeps all of that out of export's output,
around each library call only, and lets it through with ``--verbose`` (``test_export_int8``'s
failing CLI run checks that side).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.quiet import library_output, quiet

REPO = Path(__file__).resolve().parents[1]

# Every line export writes on a successful --int8 --fp16 run starts with one of these; anything else
# (onnxruntime's "Collecting tensor data and making histogram ...", its "Please consider to run
# pre-processing", torch.onnx's warnings) is chatter that leaked.
OUR_PREFIXES = (
    "WARNING: ",  # our own warnings (few calibration images, a coarse validation split)
    "pytorch reference: ", "the accuracy budget is judged on ", "JPEG draft decoding: ",
    "model.",  # the stages of every artifact and INT8 attempt, the closing lines of the INT8 tables
    "INT8 attempts for ", "|",  # the ladder tables and the summary table
    "bundle written: ", "next: python -m runtime.bench ",
)


@pytest.fixture(autouse=True)
def not_verbose(monkeypatch):
    monkeypatch.delenv("VL2LITE_VERBOSE", raising=False)  # the switch that lets the chatter through


def unused_initializer_model(path: Path) -> Path:
    """A one-Relu graph with an initializer nothing reads: onnxruntime's C++ core warns about it on load."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    unused = numpy_helper.from_array(np.ones(3, np.float32), "unused")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y], [unused])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def chatter(model: Path) -> None:
    """Everything a library does to be heard: print, the root logger, a warning, onnxruntime's C++ log."""
    print("Collecting tensor data and making histogram ...")
    print("tqdm-like progress", file=sys.stderr)
    logging.warning("Please consider to run pre-processing before quantization.")
    warnings.warn("the legacy exporter is deprecated", DeprecationWarning)
    ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])  # "Removing initializer 'unused'"


def test_quiet_keeps_every_kind_of_library_chatter_out_and_leaves_no_trace(tmp_path, capfd):
    model = unused_initializer_model(tmp_path / "m.onnx")
    root_handlers = logging.getLogger().handlers[:]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet("test library"):
            chatter(model)
        warnings.warn("ours", UserWarning)  # the filters were scoped to the call
    out, err = capfd.readouterr()  # file descriptors too: onnxruntime's C++ log writes to fd 2
    assert out == "" and err == ""
    assert [str(w.message) for w in seen] == ["ours"]
    assert logging.getLogger().handlers == root_handlers  # logging.warning installed no stderr handler for later


def test_what_a_failing_call_said_is_shown_and_its_exception_propagates(tmp_path, capfd):
    with pytest.raises(ValueError, match="calibration failed"):
        with quiet("onnxruntime quantize_static"):
            print("Collecting tensor data and making histogram ...")
            logging.warning("Failed to infer data type of tensor: 'x'")
            raise ValueError("calibration failed")
    out, err = capfd.readouterr()
    assert out == ""
    assert err.splitlines() == ["onnxruntime quantize_static said, before it failed:",
                                "Collecting tensor data and making histogram ...",
                                "WARNING: Failed to infer data type of tensor: 'x'"]


def test_a_library_error_record_is_shown_with_the_call_named(capfd):
    with quiet("onnxruntime quant_pre_process"):
        logging.getLogger("onnxruntime.quantization").info("input model: x")
        logging.getLogger("onnxruntime.quantization").error("symbolic shape inference failed")
    assert capfd.readouterr().err == "onnxruntime quant_pre_process: symbolic shape inference failed\n"


def test_verbose_lets_it_through_on_stderr(tmp_path, capfd, caplog):
    model = unused_initializer_model(tmp_path / "m.onnx")
    with library_output(shown=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with quiet("test library"):
            chatter(model)
    out, err = capfd.readouterr()
    assert out == ""  # stdout carries only the command's result (the bundle path)
    assert "Collecting tensor data" in err and "Removing initializer 'unused'" in err
    assert "pre-processing" in caplog.text  # the root logger's own handlers got it (pytest's here, stderr in a CLI)
    with quiet("test library"):  # the switch ends with its block
        print("hidden again")
    assert capfd.readouterr().out == ""


def test_vl2lite_verbose_lets_it_through_as_in_the_runtime(monkeypatch, capfd):
    monkeypatch.setenv("VL2LITE_VERBOSE", "1")
    with quiet("test library"):
        print("Collecting tensor data and making histogram ...")
    assert capfd.readouterr() == ("", "Collecting tensor data and making histogram ...\n")


def test_export_cli_prints_its_lines_only(trained_checkpoint, tmp_path):
    """The real command: entropy calibration (the calibrator that print()s most), FP16, both INT8 flavours."""
    out = tmp_path / "bundle"
    cmd = [sys.executable, "-m", "export", str(trained_checkpoint), "--int8", "--fp16", "--out", str(out),
           "--calib-method", "entropy", "--calib-images", "16", "--min-calib-images", "1", "--max-top1-drop", "100"]
    env = {**os.environ, "VL2LITE_PROGRESS": "1"}  # (VL2LITE_VERBOSE: unset by the fixture)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{out}\n"  # stdout: the bundle path, nothing else
    lines = proc.stderr.splitlines()
    leaked = [ln for ln in lines if not ln.startswith(OUR_PREFIXES)]
    assert leaked == [], "\n".join(leaked)
    for name in ("model.onnx (fp32)", "model.fp16.onnx (fp16)",  # each long step is a stage
                 "model.int8.onnx attempt 1: entropy, 16 images, all INT8",
                 "model.int8.trt.onnx attempt 1: entropy, 16 images, all INT8"):
        assert f"{name}: started (" in proc.stderr and f"{name}: done, " in proc.stderr, name
    # the ladder's table, closed by the attempt each INT8 file is
    assert "model.int8.onnx: attempt 1 (entropy, 16 images, all INT8), within budget" in lines
    assert "model.int8.trt.onnx: attempt 1 (entropy, 16 images, all INT8), within budget" in lines
    # the summary: where the bundle is, and the file of every precision
    summary = lines[lines.index(f"bundle written: {out}"):]
    for precision, file in [("fp32", "model.onnx"), ("fp16", "model.fp16.onnx"), ("int8", "model.int8.onnx"),
                            ("int8", "model.int8.trt.onnx")]:
        assert any(ln.startswith(f"| {precision} | {file} | ") for ln in summary), file
    assert summary[-1].startswith(f"next: python -m runtime.bench {out}")
