"""Teacher-embedding cache: round trip, identity, resume, corruption, training without a teacher."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import distill.cache as cache_mod
from distill.cache import build_cache, open_cache
from distill.cache_key import fingerprint_fields
from distill.config import load_config
from distill.data import load_dataset
from distill.targets import cached_embeddings
from distill.teacher import Teacher
from distill.train import fit
from distill.transforms import ViewSampler, view_sampler
from formats.cache import CacheMeta, key_fields
from formats.errors import UserError
from tests.conftest import REPO, demo_overrides


class Killed(Exception):
    """Stands for the process being killed mid-build."""


def cfg_for(root, tmp_path, **extra):
    extra = {"teacher.cache": str(tmp_path / "cache"), "teacher.cache_views": 3,
             "teacher.cache_shard_size": 100, "teacher.cache_batch_size": 64, **extra}
    return load_config(REPO / "configs" / "demo.yaml", demo_overrides(root, tmp_path / "runs", **extra))


@pytest.fixture(scope="module")
def built(synthetic_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    cfg = cfg_for(synthetic_root, tmp)
    torch.manual_seed(0)  # the tiny teacher has random weights: fix them for the comparison
    build_cache(cfg)
    return cfg


def test_cached_embedding_equals_fresh_teacher_forward_of_replayed_view(built):
    splits = load_dataset(built.data)
    cache = open_cache(built.teacher.cache, fingerprint_fields(built, splits))
    assert cache.meta.num_images == len(splits.train) == 210 and cache.num_views == 3
    assert len(cache.shards) == 3 and cache.shards[0].array.dtype == np.float16
    torch.manual_seed(0)
    teacher = Teacher(built.teacher.model, built.teacher.pretrained, torch.device("cpu"))
    sampler = ViewSampler(built.teacher.cache_seed, (built.data.crop_scale_min, 1.0), built.data.hflip)
    idx, views = torch.tensor([0, 99, 100, 209]), torch.tensor([0, 2, 1, 2])
    xs = []
    for i, v in zip(idx.tolist(), views.tolist()):
        img = splits.train.load(i)
        xs.append(sampler.render(img, sampler.params(i, v, *img.size), teacher.target))
    fresh = teacher.encode_images(torch.stack(xs))  # (4, D)
    cached = cache.lookup(idx, views)
    assert cached.shape == fresh.shape == (4, 64)
    assert torch.allclose(cached, fresh, atol=2e-3)  # fp16 storage of unit vectors
    assert not torch.allclose(cache.lookup(idx, (views + 1) % 3), fresh, atol=2e-3)  # views differ
    text = teacher.encode_classes(splits.class_names, built.data.prompts)
    assert torch.allclose(cache.text_embeddings, text, atol=1e-5)


def test_foreign_cache_is_refused_with_the_difference(built, synthetic_root, tmp_path):
    other = cfg_for(synthetic_root, tmp_path, **{"teacher.cache": built.teacher.cache, "teacher.cache_seed": 5})
    splits = load_dataset(other.data)
    with pytest.raises(UserError, match=r"another setup .*teacher.cache_seed: cache 0 vs config 5"):
        open_cache(other.teacher.cache, fingerprint_fields(other, splits))
    with pytest.raises(UserError, match=r"holds a teacher cache for another setup"):
        build_cache(other)
    with pytest.raises(UserError, match="does not exist"):
        open_cache(tmp_path / "none", fingerprint_fields(other, splits))


def test_interrupted_build_resumes_without_redoing_shards(synthetic_root, tmp_path, monkeypatch, built):
    cfg = cfg_for(synthetic_root, tmp_path)
    real, calls, armed = cache_mod._save_shard, [], [True]

    def dies_on_second_shard(root, s, *args):
        calls.append(s)
        if armed[0] and len(calls) == 2:
            raise Killed
        return real(root, s, *args)

    monkeypatch.setattr(cache_mod, "_save_shard", dies_on_second_shard)
    torch.manual_seed(0)
    with pytest.raises(Killed):
        build_cache(cfg)
    root = tmp_path / "cache"
    first = (root / "shard_00000.npy").stat().st_mtime_ns
    assert not (root / "shard_00001.json").exists()
    calls.clear()
    armed[0] = False
    torch.manual_seed(0)
    build_cache(cfg)
    assert calls == [1, 2]  # shard 0 was kept
    assert (root / "shard_00000.npy").stat().st_mtime_ns == first
    for s in range(3):  # the same bytes as the uninterrupted build
        reference = np.load(Path(built.teacher.cache) / f"shard_{s:05d}.npy")
        assert np.array_equal(np.load(root / f"shard_{s:05d}.npy"), reference)


def test_corrupt_shard_is_detected(built, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(built.teacher.cache, copy)
    npy = copy / "shard_00001.npy"
    data = bytearray(npy.read_bytes())
    data[-10] ^= 0xFF  # same size, one flipped byte
    npy.write_bytes(bytes(data))
    key = CacheMeta.read(copy / "meta.json", "").fields
    with pytest.raises(UserError, match="shard_00001.npy is corrupt"):
        open_cache(copy, key)
    npy.write_bytes(bytes(data[:-100]))  # truncated
    with pytest.raises(UserError, match="is corrupt"):
        open_cache(copy, key, verify=False)
    (copy / "shard_00002.json").unlink()
    npy.write_bytes(bytes(data))
    with pytest.raises(UserError, match="incomplete"):
        open_cache(copy, key, verify=False)


def test_training_from_cache_never_runs_the_teacher(built, monkeypatch):
    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher must not be loaded when training from a cache")

    monkeypatch.setattr(Teacher, "__init__", no_teacher)
    best = fit(built)
    records = [json.loads(x) for x in (best.parent / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and "train_ling" in records[0] and records[-1]["train_cls"] < records[0]["train_cls"]


def test_blended_views_are_cached_as_the_teacher_sees_them_and_train(synthetic_root, tmp_path):
    mixed = cfg_for(synthetic_root, tmp_path, **{"data.mix": "mixup", "data.mix_prob": 0.5, "train.epochs": 1})
    splits = load_dataset(mixed.data)
    fields = fingerprint_fields(mixed, splits)
    assert key_fields(fields)["data.mix"] == "mixup" and fields.data_mix_prob == 0.5
    assert "data.mix" not in key_fields(fingerprint_fields(cfg_for(synthetic_root, tmp_path), splits))  # old caches
    torch.manual_seed(0)
    build_cache(mixed)
    cache = open_cache(mixed.teacher.cache, fields)
    torch.manual_seed(0)
    teacher = Teacher(mixed.teacher.model, mixed.teacher.pretrained, torch.device("cpu"))
    sampler = view_sampler(mixed.data, mixed.teacher.cache_seed)
    n = len(splits.train)
    blended = [(i, v) for i in range(n) for v in range(3) if sampler.mix_params(i, v, n) is not None][:3]
    assert len(blended) == 3
    xs = [sampler.sample(splits.train, i, v, [teacher.target])[0][0] for i, v in blended]
    fresh = teacher.encode_images(torch.stack(xs))  # the teacher's embedding of each blend
    idx, views = (torch.tensor(c) for c in zip(*blended))
    assert torch.allclose(cache.lookup(idx, views), fresh, atol=2e-3)
    emb = cached_embeddings(cache, splits, sampler)
    t, _ = emb.flat_train()  # calibration and the probe see the plain views only
    assert len(t) == int(emb.train_plain.sum()) and 0 < len(t) < n * 3
    best = fit(mixed)  # the blends' two labels reach the loss
    record = json.loads((best.parent / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(record["train_cls"]) and "train_ling" in record


def test_unreadable_meta_json_is_one_clear_error(built, tmp_path):
    key = fingerprint_fields(built, load_dataset(built.data))
    root = tmp_path / "cache"
    root.mkdir()
    (root / "meta.json").write_text('{"fingerprint": "abc", "fiel')  # torn by a crash
    with pytest.raises(UserError, match="meta.json is not valid JSON .*python -m distill cache"):
        open_cache(root, key)
    (root / "meta.json").write_text('{"fingerprint": "abc"}')
    with pytest.raises(UserError, match="meta.json lacks the field 'fields'"):
        open_cache(root, key)


def test_kill_9_mid_build_then_the_next_build_completes_with_the_same_bytes(built, synthetic_root, tmp_path):
    """A real ``python -m distill cache`` killed after its first shard: the next run keeps that
    shard, writes the rest, and the cache equals the uninterrupted build byte for byte."""
    import signal
    import subprocess
    import sys
    import time
    args = [f"{k}={v}" for k, v in demo_overrides(synthetic_root, tmp_path / "runs", **{
        "teacher.cache": str(tmp_path / "cache"), "teacher.cache_views": 3, "teacher.cache_shard_size": 100,
        "teacher.cache_batch_size": 8}).items()]
    cmd = [sys.executable, "-m", "distill", "cache", "--config", "configs/demo.yaml", *args]
    root = tmp_path / "cache"
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (root / "shard_00000.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the build ended before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (root / "shard_00002.json").exists()  # killed mid-build
    with pytest.raises(UserError, match="incomplete"):  # a half-built cache never passes for a whole one
        open_cache(root, CacheMeta.read(root / "meta.json", "").fields)
    first = (root / "shard_00000.npy").stat().st_mtime_ns
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (root / "shard_00000.npy").stat().st_mtime_ns == first  # kept, not redone
    for s in range(3):
        reference = np.load(Path(built.teacher.cache) / f"shard_{s:05d}.npy")
        assert np.array_equal(np.load(root / f"shard_{s:05d}.npy"), reference)
    assert not list(root.glob(".*.tmp"))
