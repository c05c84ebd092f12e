"""The CUDA paths: bf16 cache build, bf16 training, nccl under torchrun, the PyTorch reference backend.

Skipped without a CUDA GPU (CI has none); ``benchmarks/gpu_check.sh`` runs them on a lent GPU.
"""
import json

import numpy as np
import pytest
import torch

from distill.cache import build_cache, open_cache
from distill.cache_key import fingerprint_fields
from distill.config import load_config
from distill.data import load_dataset
from distill.teacher import Teacher
from distill.transforms import ViewSampler
from tests.conftest import REPO, demo_overrides
from tests.test_distributed import free_port

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def gpu_cfg(root, tmp_path, **extra):
    return load_config(REPO / "configs" / "demo.yaml",
                       demo_overrides(root, tmp_path / "runs", **{"train.device": "cuda", **extra}))


def test_bf16_cache_on_gpu_agrees_with_fp32_teacher_on_cpu(synthetic_root, tmp_path):
    cfg = gpu_cfg(synthetic_root, tmp_path, **{"teacher.cache": str(tmp_path / "cache"), "teacher.cache_views": 2})
    build_cache(cfg, device=torch.device("cuda"))
    splits = load_dataset(cfg.data)
    cache = open_cache(cfg.teacher.cache, fingerprint_fields(cfg, splits))
    torch.manual_seed(cfg.teacher.cache_seed)  # build_cache seeds the random-weight teacher the same way
    teacher = Teacher(cfg.teacher.model, cfg.teacher.pretrained, torch.device("cpu"))
    sampler = ViewSampler(cfg.teacher.cache_seed, (cfg.data.crop_scale_min, 1.0), cfg.data.hflip)
    idx, views = torch.tensor([0, 57, 209]), torch.tensor([0, 1, 1])
    xs = []
    for i, v in zip(idx.tolist(), views.tolist()):
        img = splits.train.load(i)
        xs.append(sampler.render(img, sampler.params(i, v, *img.size), teacher.target))
    fresh = teacher.encode_images(torch.stack(xs))  # (3, D) fp32 on the CPU
    cached = cache.lookup(idx, views)  # (3, D): computed in bf16 on the GPU, stored fp16, read as fp32
    cos = torch.nn.functional.cosine_similarity(cached, fresh, dim=1)
    assert cos.min() > 0.99, cos  # bf16 keeps ~3 significant digits
    other = torch.nn.functional.cosine_similarity(cache.lookup(idx, 1 - views), fresh, dim=1)
    assert (cos > other).all()  # the replayed view, not its sibling


def test_bf16_training_on_gpu_writes_a_checkpoint_that_loads_on_cpu(synthetic_root, tmp_path):
    from distill.train import fit
    from students.checkpoint import load_student
    best = fit(gpu_cfg(synthetic_root, tmp_path, **{"train.epochs": 3}))
    record = json.loads((best.parent / "metrics.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(record["train_loss"]) and record["train_loss"] > 0
    student, ckpt = load_student(best)
    assert next(student.parameters()).device.type == "cpu" and ckpt.num_classes == 10
    results = json.loads((best.parent / "results.json").read_text())
    assert results["test"]["top1"] > 0.1  # better than chance (0.1) after three epochs


def test_torchrun_on_one_gpu_uses_nccl(synthetic_root, tmp_path):
    import os
    import subprocess
    import sys
    over = demo_overrides(synthetic_root, tmp_path / "runs", **{"train.device": "cuda", "train.epochs": 1})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "distill", "--config", "configs/demo.yaml",
           *[f"{k}={v}" for k, v in over.items()]]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distributed: 1 process(es), backend nccl" in done.stdout  # a real process group, not a no-op
    assert "best checkpoint:" in done.stdout


def test_torch_reference_backend_on_gpu_matches_onnxruntime_cpu(exported_bundle, trained_checkpoint):
    from runtime.model import open_classifier
    from students.reference import TorchSession
    torch_session = TorchSession(trained_checkpoint)
    assert torch_session.device != "cpu"
    batch = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    ort = open_classifier(exported_bundle, "onnxruntime", "model.onnx")
    np.testing.assert_allclose(torch_session.run(batch), ort.logits(batch), atol=2e-3, rtol=1e-3)
