"""Hardening round 2 (stage side): full and read-only disks, config files, refused pickles' messages."""
from __future__ import annotations

import errno

import pytest

from formats.errors import UserError, refusal_reason
from formats.files import atomic_write, writable_folder


def _fail(exc: BaseException):
    def write(f) -> None:
        f.write(b"partial")
        raise exc
    return write


@pytest.mark.parametrize("exc,reason", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file data/0: "
                  "file write failed"), "PytorchStreamWriter failed writing"),  # torch.save on a full disk
], ids=["enospc", "torch-save"])
def test_a_failed_write_is_one_error_naming_the_path_and_the_free_space(tmp_path, exc, reason):
    target = tmp_path / "out" / "best.pt"
    with pytest.raises(UserError, match=f"cannot write {target} \\({reason}.*GB free on {tmp_path}"):
        atomic_write(target, _fail(exc))
    assert list((tmp_path / "out").iterdir()) == []  # no temporary left behind, nothing that looks complete


def test_other_errors_of_a_writer_pass_through(tmp_path):
    with pytest.raises(ValueError, match="a bug"):
        atomic_write(tmp_path / "x.json", _fail(ValueError("a bug")))


def test_a_folder_that_cannot_be_written_or_is_too_full_is_refused_before_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="train.out_dir .*a-file/runs cannot be written .*choose a writable folder"):
        writable_folder(blocker / "runs", "train.out_dir")
    with pytest.raises(UserError, match=r"--out .* MB free, about .* MB are needed: free some space"):
        writable_folder(tmp_path / "bench", "--out", need_bytes=1 << 62)
    assert writable_folder(tmp_path / "ok", "--out", need_bytes=1) == tmp_path / "ok"


def test_export_onto_a_full_disk_is_one_error_and_no_staging_folder(tmp_path):
    from export.bundle import staging
    out = tmp_path / "bundle"
    with pytest.raises(UserError, match=f"cannot write {out} \\(No space left on device"):
        with staging(out, overwrite=False) as tmp:
            (tmp / "model.onnx").write_bytes(b"x")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_training_into_an_unwritable_out_dir_stops_before_the_first_epoch(synthetic_root, tmp_path):
    from distill.config import load_config
    from distill.train import fit
    from tests.conftest import REPO, demo_overrides
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cfg = load_config(REPO / "configs" / "demo.yaml", demo_overrides(synthetic_root, blocker / "runs",
                                                                     **{"teacher.enabled": False}))
    with pytest.raises(UserError, match="train.out_dir .* cannot be written"):
        fit(cfg)


def test_bench_into_an_unwritable_out_is_one_error(exported_bundle, tmp_path):
    from runtime.bench import run_bench
    from runtime.settings import BenchSettings
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="--out .* cannot be written"):
        run_bench(exported_bundle, BenchSettings(out=blocker / "bench"))


@pytest.mark.parametrize("message,expected", [
    ("Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` argument. "
     "Re-running `torch.load` with `weights_only` set to `False` will likely succeed, but it can result in arbitrary "
     "code execution.\n\nTrying to load unsupported GLOBAL posix.system whose module posix is blocked.",
     "a pickle asking for the Python global posix.system"),
    ("Weights only load failed.\nWeightsUnpickler error: Unsupported global: GLOBAL os.system was not an allowed "
     "global by default. Please use `torch.serialization.add_safe_globals([system])`",
     "a pickle asking for the Python global os.system"),
    ("PytorchStreamReader failed reading zip archive: failed finding central directory. This is an internal error",
     "PytorchStreamReader failed reading zip archive: failed finding central directory"),
], ids=["blocked-module", "unsupported-global", "truncated"])
def test_a_refused_pickle_names_what_it_asked_for_never_the_advice_to_unpickle_it(message, expected):
    reason = refusal_reason(RuntimeError(message))
    assert reason == expected and "weights_only" not in reason and "Please" not in reason


def test_a_checkpoint_asking_for_a_huge_input_is_refused_before_any_allocation(trained_checkpoint, tmp_path):
    import torch

    from students.checkpoint import read_checkpoint
    ckpt = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    ckpt["preprocessing"] = {**ckpt["preprocessing"], "input_size": [100000, 100000], "resize_size": 100000}
    torch.save(ckpt, tmp_path / "huge.pt")
    with pytest.raises(UserError, match=r"input_size \[100000, 100000\] .* beyond 4096 pixels a side: the checkpoint "
                                         r"is damaged"):
        read_checkpoint(tmp_path / "huge.pt")


def test_a_huge_image_is_one_clear_error_without_pillows_warning(tmp_path):
    import subprocess
    import sys

    from PIL import Image
    from tests.conftest import REPO
    path = tmp_path / "huge.png"
    Image.new("L", (10000, 9000)).save(path)  # 90 MP: over Pillow's 89 MP warning, over our 40 MP limit
    code = ("from formats.errors import UserError\nfrom formats.preprocessing import open_image\n"
            f"try:\n    open_image({str(path)!r})\nexcept UserError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=REPO, capture_output=True, text=True)
    assert "over the limit of 40000000" in proc.stdout
    assert "DecompressionBombWarning" not in proc.stderr, proc.stderr
