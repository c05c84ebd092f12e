"""Short trainings on synthetic data: loss goes down, checkpoints load safely, resume is exact."""
import json
import subprocess
import sys

import pytest
import torch

import distill.selection as selection_mod
import distill.train as train_mod
from distill.config import load_config
from distill.losses import cosine_factor
from distill.train import fit
from formats.errors import UserError
from formats.run_results import read_results
from students.checkpoint import load_student, read_checkpoint
from tests.conftest import REPO, demo_overrides


class Killed(Exception):
    """Stands for the process being killed between epochs."""


def demo(root, out, **extra):
    return load_config(REPO / "configs" / "demo.yaml", demo_overrides(root, out, **extra))


def test_training_lowers_loss_and_writes_artifact(trained_checkpoint):
    run = trained_checkpoint.parent
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 7))
    assert records[-1]["train_cls"] < records[0]["train_cls"]
    assert records[-1]["val_top1"] > 0.5  # 10 classes: chance is 0.1
    for key in ("train_vis", "train_ling", "w_cls", "images_per_s"):
        assert key in records[0]
    ckpt = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["schema"] == "vl2lite-student" and ckpt["arch"] == "resnet18"
    assert set(ckpt["metrics"]) == {"val", "test"} and ckpt["metrics"]["test"]["images"] == 80
    assert ckpt["preprocessing"]["input_size"] == [32, 32] and len(ckpt["class_names"]) == 10
    # Only what deployment needs: no teacher, no condensation layers, no optimizer.
    assert all(k.startswith(("backbone.", "classifier.")) for k in ckpt["state_dict"])
    assert "train_state" not in ckpt
    assert (run / "config.yaml").is_file() and (run / "results.json").is_file()
    student, meta = load_student(trained_checkpoint)
    assert student(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_cosine_steps_anneals_the_learning_rate_within_each_epoch(synthetic_root, tmp_path):
    """train.scheduler=cosine_steps sets the rate every step: after the last step of 2 epochs it is near 0, where
    the per-epoch cosine would still hold half of it (a run of few long pool epochs needs this to anneal at all)."""
    best = fit(demo(synthetic_root, tmp_path, **{"teacher.enabled": False, "train.scheduler": "cosine_steps",
                                                 "train.lr": 0.01}))
    state = torch.load(best.parent / "last.pt", map_location="cpu", weights_only=True)["train_state"]
    lr = state["optimizer"]["param_groups"][0]["lr"]  # the rate of the last step; per-epoch cosine ends at 0 exactly
    assert 0 < lr < 0.01 * cosine_factor(0.9)  # within the last tenth of the run: under 2.5% of train.lr
    assert cosine_factor(0.0) == 1.0 and cosine_factor(0.5) == pytest.approx(0.5) and cosine_factor(1.0) == 0.0


def test_select_last_keeps_the_final_epoch_and_a_tiny_val_split_is_warned_about(synthetic_root, tmp_path, capsys):
    best = fit(demo(synthetic_root, tmp_path, **{"teacher.enabled": False, "train.epochs": 2, "train.select": "last"}))
    ckpt, meta = read_checkpoint(best)
    assert meta.epoch == 2 and json.loads((best.parent / "results.json").read_text())["best_epoch"] == 2
    records = [json.loads(line) for line in (best.parent / "metrics.jsonl").read_text().splitlines()]
    assert [r["best"] for r in records] == [False, True]
    assert "train.select=last" not in capsys.readouterr().err  # already chosen: no advice
    chosen = demo(synthetic_root, tmp_path, **{"train.select": "best_val"})
    selection_mod.warn_noisy_selection(chosen, val_images=40, classes=10)
    assert "40 images (4.0 per class), so one image moves its top-1 by 2.5 points" in capsys.readouterr().err


def test_select_auto_keeps_the_final_epoch_below_200_validation_images_and_says_so(synthetic_root, tmp_path, capsys):
    auto = demo(synthetic_root, tmp_path)
    assert auto.train.select == "auto"  # the default
    assert [selection_mod.selection(auto, n) for n in (30, 199, 200, 5000)] == ["last", "last", "best_val", "best_val"]
    assert selection_mod.selection(demo(synthetic_root, tmp_path, **{"train.select": "best_val"}), 30) == "best_val"
    none = demo(synthetic_root, tmp_path, **{"data.labels": "none", "data.unlabeled": str(tmp_path)})
    assert selection_mod.selection(none, 5000) == "last"  # without labels validation only measures
    best = fit(demo(synthetic_root, tmp_path, **{"teacher.enabled": False, "train.epochs": 2, "train.progress": True}))
    records = [json.loads(line) for line in (best.parent / "metrics.jsonl").read_text().splitlines()]
    assert [r["best"] for r in records] == [False, True]  # 30 validation images: the final epoch
    err = capsys.readouterr().err
    assert "best.pt keeps the final epoch (train.select=auto, 30 validation images" in err and "warning" not in err


def test_baseline_trains_without_teacher(synthetic_root, tmp_path):
    best = fit(demo(synthetic_root, tmp_path, **{"teacher.enabled": False, "train.epochs": 1}))
    records = [json.loads(line) for line in (best.parent / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["w_cls"] == 1.0 and "train_vis" not in records[0]
    assert read_checkpoint(best)[0]["config"]["teacher"]["enabled"] is False


def test_interrupted_run_resumes_to_identical_weights(synthetic_root, tmp_path, monkeypatch, capsys):
    fit(demo(synthetic_root, tmp_path, **{"train.name": "full"}))
    calls = {"n": 0}
    real_epoch = train_mod.train_one_epoch

    def interrupt_second_epoch(run, epoch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed  # the process dies after epoch 1 was saved
        return real_epoch(run, epoch)

    monkeypatch.setattr(train_mod, "train_one_epoch", interrupt_second_epoch)
    with pytest.raises(Killed):
        fit(demo(synthetic_root, tmp_path, **{"train.name": "cut"}))
    monkeypatch.setattr(train_mod, "train_one_epoch", real_epoch)
    assert read_checkpoint(tmp_path / "cut" / "last.pt")[0]["train_state"]["epoch"] == 1
    with pytest.raises(UserError, match="already holds a run"):
        fit(demo(synthetic_root, tmp_path, **{"train.name": "cut"}))
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')  # a kill in the middle of writing epoch 2's line
    fit(demo(synthetic_root, tmp_path, **{"train.name": "cut", "train.resume": True}))
    assert f"resuming {tmp_path / 'cut'} from last.pt: 1 of 2 epochs done" in capsys.readouterr().err
    a, _ = read_checkpoint(tmp_path / "full" / "last.pt")
    b, _ = read_checkpoint(tmp_path / "cut" / "last.pt")
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for key, value in a["train_state"]["heads"].items():
        assert torch.equal(value, b["train_state"]["heads"][key]), key
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def test_unsafe_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"schema": "vl2lite-student", "x": Evil()}, path)
    with pytest.raises(UserError, match="cannot be loaded safely"):
        read_checkpoint(path)
    assert not marker.exists()
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="is not a student artifact"):
        read_checkpoint(tmp_path / "other.pt")


def test_cli_trains_and_prints_checkpoint(synthetic_root, tmp_path):
    args = [f"{k}={v}" for k, v in demo_overrides(synthetic_root, tmp_path, **{"train.epochs": 1}).items()]
    proc = subprocess.run([sys.executable, "-m", "distill", "--config", "configs/demo.yaml", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"best checkpoint: {tmp_path / 'demo' / 'best.pt'}" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "distill", "--config", "configs/demo.yaml",
                           f"data.root={tmp_path / 'missing'}", f"train.out_dir={tmp_path / 'other'}"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().endswith("not found: set data.root to where the dataset lives")


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False when it ended (or timed out) first."""
    import signal
    import time
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    return False


def test_kill_9_mid_training_then_resume_completes_with_every_epoch_once(synthetic_root, tmp_path):
    args = [f"{k}={v}" for k, v in demo_overrides(synthetic_root, tmp_path, **{"train.epochs": 4, "train.name": "k9",
                                                                                "teacher.enabled": False}).items()]
    cmd = [sys.executable, "-m", "distill", "--config", "configs/demo.yaml", *args]
    run_dir = tmp_path / "k9"
    metrics = run_dir / "metrics.jsonl"
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _kill_when(proc, lambda: (run_dir / "last.pt").is_file()), "finished before the kill"
    assert not read_results(run_dir).finished  # nothing says the run finished
    resumed = subprocess.run([*cmd, "train.resume=true"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]  # each epoch once: none missing, none twice
    best, _ = read_checkpoint(run_dir / "best.pt")
    assert "test" in best["metrics"] and not list(run_dir.glob(".*.tmp"))


def test_a_new_run_removes_what_a_killed_one_left(synthetic_root, tmp_path):
    cfg = load_config(REPO / "configs" / "demo.yaml", demo_overrides(synthetic_root, tmp_path, **{
        "train.epochs": 1, "train.name": "t", "teacher.enabled": False}))
    (tmp_path / "t").mkdir()
    for name in (".best.pt.tmp", ".results.json.tmp"):
        (tmp_path / "t" / name).write_bytes(b"half")
    (tmp_path / "t" / "notes.tmp").write_text("a user's file")  # not ours: kept
    (tmp_path / "t" / "metrics.jsonl").write_text('{"epoch": 1, "loss": 9.0}\n')  # killed before its first last.pt
    fit(cfg)
    assert not list((tmp_path / "t").glob(".*.tmp")) and (tmp_path / "t" / "notes.tmp").is_file()
    lines = (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0]).get("loss") != 9.0 and "epoch_time_s" in lines[0]
