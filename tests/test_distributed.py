"""torchrun with 2 CPU processes (gloo): cache build shards and DDP training."""
import json
import socket
import subprocess
import sys

import numpy as np

from tests.conftest import REPO, demo_overrides


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "distill", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def test_two_process_cache_build_and_training(synthetic_root, tmp_path):
    over = demo_overrides(synthetic_root, tmp_path / "runs", **{
        "teacher.cache_views": 2, "teacher.cache_shard_size": 60, "train.epochs": 2})  # the default cache folder
    args = [f"{k}={v}" for k, v in over.items()]
    built = torchrun("cache", "--config", "configs/demo.yaml", *args)
    assert built.returncode == 0, built.stderr[-3000:]
    assert built.stdout.count("teacher cache:") == 1  # only rank 0 reports
    assert "distributed: 2 process(es), backend gloo" in built.stdout
    [cache] = (tmp_path / "runs" / "teacher-cache").iterdir()
    assert "teacher cache: built in " in built.stdout and str(cache) in built.stdout
    records = [json.loads((cache / f"shard_{s:05d}.json").read_text()) for s in range(4)]
    assert [r["start"] for r in records] == [0, 60, 120, 180] and records[-1]["stop"] == 210
    assert all(np.load(cache / f"shard_{s:05d}.npy").shape[1:] == (2, 64) for s in range(4))

    trained = torchrun("--config", "configs/demo.yaml", *args)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert trained.stdout.count("best checkpoint:") == 1
    assert trained.stderr.count(f"teacher cache: reused, {cache}") == 1  # both ranks read it; rank 0 says so
    run = tmp_path / "runs" / "demo"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # one record per epoch, written by rank 0 only
    record = json.loads(lines[-1])
    assert record["val_images"] == 30  # both ranks' halves of the validation split, summed
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["images"] == 80
