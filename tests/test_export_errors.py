"""export: every bad input is one clear line and a non-zero exit, never a traceback or a bundle."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from export import ExportOptions, export_bundle
from formats.errors import UserError

REPO = Path(__file__).resolve().parents[1]


class RunsCode:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "export", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def assert_one_error_line(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_checkpoint_cli(tmp_path):
    assert_one_error_line(run_cli(str(tmp_path / "nope.pt"), "--out", str(tmp_path / "b")), "not found")
    assert not (tmp_path / "b").exists()


def test_malicious_pickle_is_refused_and_never_executed_cli(tmp_path):
    marker, ckpt = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"schema": "vl2lite-student", "payload": RunsCode(marker)}, ckpt)
    proc = run_cli(str(ckpt), "--out", str(tmp_path / "b"))
    assert_one_error_line(proc, "cannot be loaded safely")
    assert "system]" in proc.stderr  # names what the pickle asked for...
    assert "weights_only` set to `False`" not in proc.stderr and "Re-running" not in proc.stderr  # ...not torch's advice
    assert not marker.exists() and not (tmp_path / "b").exists()


def test_corrupt_checkpoint(trained_checkpoint, tmp_path):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(trained_checkpoint.read_bytes()[:5000])
    with pytest.raises(UserError, match="cannot be loaded safely"):
        export_bundle(bad, tmp_path / "b", ExportOptions())
    assert not (tmp_path / "b").exists()


def test_not_a_student_artifact(tmp_path):
    other = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(3)}, other)
    with pytest.raises(UserError, match="not a student artifact"):
        export_bundle(other, tmp_path / "b", ExportOptions())


def test_unwritable_output_folder_cli(trained_checkpoint, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # a folder cannot be created under a regular file (even as root)
    proc = run_cli(str(trained_checkpoint), "--out", str(blocker / "bundle"), "--eval-images", "8")
    assert_one_error_line(proc, "cannot write the bundle")


def test_too_few_calibration_images(trained_checkpoint, tmp_path):
    # the synthetic training split holds 10 classes x (24 - 3 carved for validation) = 210 images
    with pytest.raises(UserError, match=r"only 210 training images .* at least 300"):
        export_bundle(trained_checkpoint, tmp_path / "b", ExportOptions(backends=("int8",), min_calib_images=300))
    assert not (tmp_path / "b").exists()


def test_fewer_than_recommended_calibration_images_warns(trained_checkpoint, tmp_path, capsys):
    from export.int8.ptq import check_calibration_count
    assert check_calibration_count(216, ExportOptions(backends=("int8",))) == 216
    assert "WARNING: INT8 calibration uses only 216 images" in capsys.readouterr().err


def test_a_budget_finer_than_one_judged_image_is_named(trained_checkpoint, tmp_path, capsys):
    from formats.accuracy import Budget
    assert Budget(1.0, 0.0).coarseness("val", 100) is None  # one image = 1 point: resolvable
    warning = Budget(1.0, 0.0).coarseness("val", 60)
    assert "60 val images, where one image is 1.67 points" in warning and "at least 100 val images" in warning
    # the synthetic checkpoint's validation split: 10 classes x 3 images
    export_bundle(trained_checkpoint, tmp_path / "b", ExportOptions())
    assert "judged on 30 val images, where one image is 3.33 points" in capsys.readouterr().err
    export_bundle(trained_checkpoint, tmp_path / "c", ExportOptions(max_top1_drop=5.0))
    assert "where one image is" not in capsys.readouterr().err


@pytest.mark.parametrize("field, value, fragment", [
    ("calib_method", "median", "--calib-method must be one of minmax, entropy, percentile"),
    ("max_top1_drop", -1.0, "--max-top1-drop must be in [0, 100]"),
    ("max_batch", 0, "needs 1 <= min_batch"),
    ("calib_images", 4, "--calib-images must be >= --min-calib-images"),
    ("eval_split", "train", "--eval-split must be test or val"),
])
def test_option_range_checks(field, value, fragment):
    with pytest.raises(UserError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        ExportOptions(**{field: value})


def test_an_unknown_backend_is_refused_with_the_registered_ones(trained_checkpoint, tmp_path):
    with pytest.raises(UserError, match="unknown export backend 'tflite': choose from onnx, fp16, int8, trt, triton"):
        export_bundle(trained_checkpoint, tmp_path / "b", ExportOptions(backends=("tflite",)))
    assert not (tmp_path / "b").exists()


def test_cli_refuses_bad_arguments_before_any_work(trained_checkpoint, tmp_path, capsys):
    """Types, unknown options and extra positionals are refused before the export starts: no bundle."""
    from export.__main__ import main
    out = tmp_path / "b"
    proc = run_cli(str(trained_checkpoint), "--out", str(out), "--int9")  # one through the real command
    assert_one_error_line(proc, "unrecognized arguments: --int9")
    for args, fragment in [(["--calib-images", "many"], "--calib-images/--calib_images: invalid int value: 'many'"),
                           (["extra"], "unrecognized arguments: extra"),
                           (["--max-batch", "1.5"], "invalid int value: '1.5'")]:  # the same parser, in this process
        with pytest.raises(SystemExit) as exit_:
            main([str(trained_checkpoint), "--out", str(out), *args])
        err = capsys.readouterr().err
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert exit_.value.code == 2 and len(errors) == 1 and fragment in errors[0], err
        assert not out.exists() and list(tmp_path.iterdir()) == []
    help_text = run_cli("--help")
    assert help_text.returncode == 0 and "--max-top1-drop X" in help_text.stdout
    flat = " ".join(help_text.stdout.split())  # every backend's flag, with the help its module declares
    assert "--int8, --no-int8 model.int8.onnx (U8S8, onnxruntime CPU) + model.int8.trt.onnx (S8S8, TensorRT)" in flat
    assert "--trt, --no-trt TensorRT engines from the ONNX files (needs the tensorrt package)" in flat
    assert "--fp16, --no-fp16" in flat and "--triton, --no-triton" in flat and "--backends" not in flat
    assert "accuracy budget: top-1 points an artifact may lose vs PyTorch (default: 1.0)" in " ".join(
        help_text.stdout.split())


def test_stale_temporaries_of_a_killed_export_are_removed_and_nobody_elses(trained_checkpoint, tmp_path):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process that is gone, as after kill -9
    host = socket.gethostname()
    stale = [tmp_path / f".b.partial-{host}-{dead.pid}-x1", tmp_path / f".b.old-{host}-{dead.pid}-x2"]
    kept = [tmp_path / f".b.partial-{host}-{os.getpid()}-x3",  # a live export's
            tmp_path / f".b.partial-another-host-{dead.pid}-x4",  # another machine's (shared disk)
            tmp_path / f".c.partial-{host}-{dead.pid}-x5",  # another bundle's
            tmp_path / "b.partial-notes"]  # a user's folder
    for folder in stale + kept:
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"half")
    export_bundle(trained_checkpoint, tmp_path / "b", ExportOptions(eval_images=8, parity_images=8))
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert (tmp_path / "b" / "manifest.json").is_file()


def test_kill_9_mid_export_leaves_nothing_complete_looking_and_the_next_run_completes(trained_checkpoint, tmp_path):
    import signal
    import time

    out = tmp_path / "k"
    proc = subprocess.Popen([sys.executable, "-m", "export", str(trained_checkpoint), "--int8", "--out", str(out)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".k.partial-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # inside the export: ONNX written or being written
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # no bundle, whatever it had written
    assert list(tmp_path.glob(".k.partial-*"))  # its staging folder, left by the kill
    assert run_cli(str(trained_checkpoint), "--out", str(out)).returncode == 0
    assert (out / "manifest.json").is_file() and not list(tmp_path.glob(".k.partial-*"))
