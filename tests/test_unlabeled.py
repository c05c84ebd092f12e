"""Distilling from unlabeled images (data.unlabeled): the pool, its leakage check, its cache, training with it."""
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import distill.cache as cache_mod
import distill.method as method_mod
from distill.__main__ import cli
from distill.batches import StreamSampler
from distill.cache import build_cache, open_cache, open_pool_cache, pool_dir
from distill.cache_ready import describe_cache
from distill.cache_key import fingerprint_fields, pool_fingerprint_fields
from distill.compare import default_arms
from distill.config import MethodConfig, load_config, with_overrides
from distill.config_parse import from_dict
from distill.data import TrainViews, load_dataset
from distill.heads import Condensation
from distill.losses import unlabeled_kd_loss, vl2lite_loss
from distill.method import kd_terms, step_losses
from distill.pool import NO_LABEL, list_pool, load_pool
from distill.targets import teacher_side
from distill.teacher import Teacher
from distill.preflight import check_names
from distill.train import fit
from distill.transforms import pool_view_sampler
from formats.errors import UserError
from students.checkpoint import read_checkpoint
from students.registry import create_student
from tests.conftest import REPO, demo_overrides

POOL_B, POOL_RATIO, POOL_BU = 8, 0.75, 6  # labeled batch 8, so round(0.75 * 8) = 6 pool images per step
POOL_IMAGES = 20  # kept in the cached pool: 20 // 6 = 3 steps per epoch (drop_last), not 4


def cfg_for(root, tmp_path, **extra):
    extra = {"teacher.cache": str(tmp_path / "cache"), "teacher.cache_views": 1, "teacher.unlabeled_views": 2,
             "teacher.cache_shard_size": 100, "teacher.cache_batch_size": 64, "data.batch_size": POOL_B,
             "data.unlabeled_ratio": POOL_RATIO, **extra}
    return load_config(REPO / "configs" / "demo.yaml", demo_overrides(root, tmp_path / "runs", **extra))


def copy_images(source, indices, folder: Path, prefix: str) -> list[Path]:
    """Byte-identical copies of images ``indices`` of ``source`` under new names in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in indices:
        dst = folder / f"{prefix}_{i:03d}{source.path(i).suffix}"
        shutil.copyfile(source.path(i), dst)
        out.append(dst)
    return out


def records_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def splits(synthetic_root, tmp_path_factory):
    cfg = cfg_for(synthetic_root, tmp_path_factory.mktemp("unused"))
    return load_dataset(cfg.data)


# --------------------------------------------------------------------------- list_pool

def test_list_pool_searches_a_folder_recursively_in_sorted_order_and_skips_non_images(tmp_path):
    pool = tmp_path / "pool"
    for rel in ("z.jpeg", "a/x.jpg", "b/c/y.PNG", "b/c/d/w.webp", "notes.txt", "a/readme.md", "b/c/labels.csv"):
        (pool / rel).parent.mkdir(parents=True, exist_ok=True)
        (pool / rel).write_bytes(b"not really an image")  # listing never decodes
    (pool / "folder.jpg").mkdir()  # a folder named like an image is no image
    assert list_pool(str(pool)) == [pool / "a/x.jpg", pool / "b/c/d/w.webp", pool / "b/c/y.PNG", pool / "z.jpeg"]


def test_list_pool_reads_a_list_file_relative_to_its_folder_with_comments_and_blank_lines(tmp_path, monkeypatch):
    lists = tmp_path / "lists"
    lists.mkdir()
    absolute = tmp_path / "elsewhere" / "two.png"
    (lists / "pool.txt").write_text(
        "# my unlabeled images\n"
        "  imgs/one.jpg  \n"
        "\n"
        f"{absolute}   # an absolute path, with a trailing comment\n"
        "   \n"
        "#sub/commented_out.jpg\n"
        "sub/three.jpg\n"
        "b.jpg\n", encoding="utf-8")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative entries follow the list file, never the working directory
    assert list_pool(str(lists / "pool.txt")) == [lists / "imgs/one.jpg", absolute, lists / "sub/three.jpg",
                                                  lists / "b.jpg"]  # list order, not sorted


def test_list_pool_refuses_a_missing_path_an_empty_folder_and_a_binary_list_naming_the_key(tmp_path):
    with pytest.raises(UserError, match=r"data\.unlabeled .*does not exist"):
        list_pool(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=r"data\.unlabeled.*names no images"):
        list_pool(str(empty))
    (empty / "notes.txt").write_text("only text here")  # no image among its files either
    with pytest.raises(UserError, match=r"data\.unlabeled.*names no images"):
        list_pool(str(empty))
    binary = tmp_path / "pool.txt"
    binary.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x80\x81\xfe")  # a JPEG header, not UTF-8 text
    with pytest.raises(UserError, match=r"data\.unlabeled .*not a text file"):
        list_pool(str(binary))
    comments = tmp_path / "comments.txt"
    comments.write_text("# nothing yet\n\n")
    with pytest.raises(UserError, match=r"data\.unlabeled.*names no images"):
        list_pool(str(comments))


# --------------------------------------------------------------------------- leakage

def test_load_pool_drops_exactly_the_copies_of_validation_and_test_images(synthetic_root, splits, tmp_path, capsys):
    pool = tmp_path / "pool"
    train_copies = copy_images(splits.train, range(0, 40, 4), pool, "train")  # 10: allowed, kept
    copy_images(splits.val, [0, 7, 29], pool / "scraped", "val")  # 3: dropped
    copy_images(splits.test, [1, 40, 79, 5], pool / "scraped" / "deeper", "test")  # 4: dropped
    cfg = cfg_for(synthetic_root, tmp_path, **{"data.unlabeled": str(pool)})
    capsys.readouterr()
    got = load_pool(cfg.data, splits)
    assert (got.listed, got.dropped, len(got.source)) == (17, 7, 10)
    assert sorted(got.source.paths) == sorted(train_copies)
    assert got.source.labels == [NO_LABEL] * 10
    assert len(got.hashes) == 10 and len(set(got.hashes)) == 10
    err = capsys.readouterr().err
    assert f"unlabeled pool: 10 images from {pool}" in err and "dropped 7" in err

    shutil.rmtree(pool / "scraped")  # no copies left: said so, none dropped
    clean = load_pool(cfg.data, splits)
    assert (clean.listed, clean.dropped, len(clean.source)) == (10, 0, 10) and clean.hashes == got.hashes
    assert "none of them a copy" in capsys.readouterr().err
    assert load_pool(cfg.data, splits, verbose=False) is not None and capsys.readouterr().err == ""
    assert load_pool(cfg_for(synthetic_root, tmp_path).data, splits) is None  # no pool configured


def test_a_pool_made_only_of_test_copies_is_refused(synthetic_root, splits, tmp_path):
    pool = tmp_path / "pool"
    copy_images(splits.test, range(6), pool, "test")
    copy_images(splits.val, range(2), pool, "val")
    cfg = cfg_for(synthetic_root, tmp_path, **{"data.unlabeled": str(pool)})
    with pytest.raises(UserError, match=r"data\.unlabeled .*all 8 images are copies of validation or test"):
        load_pool(cfg.data, splits)


def test_leakage_check_catches_copies_of_test_images_of_a_torchvision_dataset(synthetic_root, splits, tmp_path):
    from formats.datasets import DatasetSplits, TorchvisionSource
    from formats.labels import load_image

    shown = range(5)  # the test images as torchvision serves them: (PIL image, label), no file path
    test = TorchvisionSource([(load_image(splits.test.path(i)), splits.test.labels[i]) for i in shown],
                             [splits.test.labels[i] for i in shown])
    assert test.path(0) is None
    pool = tmp_path / "pool"
    copy_images(splits.test, shown, pool, "test")  # the very files torchvision decoded
    copy_images(splits.train, range(3), pool, "train")
    cfg = cfg_for(synthetic_root, tmp_path, **{"data.unlabeled": str(pool)})
    got = load_pool(cfg.data, DatasetSplits(splits.class_names, splits.train, splits.val, test), verbose=False)
    assert (got.listed, got.dropped) == (8, 5)


# --------------------------------------------------------------------------- bad images

def test_check_command_and_training_list_every_unreadable_pool_image(synthetic_root, splits, tmp_path, capsys):
    pool = tmp_path / "pool"
    copy_images(splits.train, range(5), pool, "train")
    good = splits.train.path(0).read_bytes()
    (pool / "broken.jpg").write_bytes(good[: len(good) // 2])  # truncated mid-scan
    (pool / "nested").mkdir()
    (pool / "nested" / "empty.png").write_bytes(b"")
    overrides = demo_overrides(synthetic_root, tmp_path / "runs", **{"data.unlabeled": str(pool),
                                                                     "train.name": "bad"})
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli(["check", "--config", str(REPO / "configs" / "demo.yaml"), *(f"{k}={v}" for k, v in overrides.items())])
    assert exit_info.value.code == 2
    out = capsys.readouterr()
    listed = [line for line in out.out.splitlines() if line.startswith("unlabeled: ")]
    assert len(listed) == 2 and any("broken.jpg" in x for x in listed) and any("empty.png" in x for x in listed)
    assert "2 of" in out.err

    cfg = load_config(REPO / "configs" / "demo.yaml", overrides)
    assert cfg.data.check_images  # on by default
    with pytest.raises(UserError) as info:
        fit(cfg)
    message = str(info.value)
    assert "broken.jpg" in message and "empty.png" in message and message.startswith("2 of ")
    run_dir = tmp_path / "runs" / "bad"
    assert not (run_dir / "metrics.jsonl").exists() and not (run_dir / "last.pt").exists()  # before epoch 1


# --------------------------------------------------------------------------- config

def test_config_errors_of_the_unlabeled_keys(synthetic_root, splits, tmp_path):
    with pytest.raises(UserError, match=r"data\.labels.*data\.unlabeled="):
        cfg_for(synthetic_root, tmp_path, **{"data.labels": "none"})
    with pytest.raises(UserError, match=r"data\.labels.*'nothing' is not one of given, none"):
        cfg_for(synthetic_root, tmp_path, **{"data.labels": "nothing", "data.unlabeled": "x"})
    for key, value in (("data.unlabeled_ratio", 0), ("data.unlabeled_ratio", -0.5), ("teacher.unlabeled_views", 0),
                       ("method.w_unlabeled", -1.0)):
        with pytest.raises(UserError, match=key.replace(".", r"\.")):
            cfg_for(synthetic_root, tmp_path, **{key: value, "data.unlabeled": "x"})

    pool = tmp_path / "pool"
    copy_images(splits.train, range(3), pool, "train")
    unlabeled = {"data.unlabeled": str(pool), "teacher.cache": "online"}
    no_labels = cfg_for(synthetic_root, tmp_path, **unlabeled, **{"data.labels": "none", "train.name": "a"})
    assert no_labels.method.linguistic == "condensed"
    with pytest.raises(UserError, match=r"data\.labels=none.*method\.linguistic=classifier"):
        fit(no_labels)
    no_teacher = cfg_for(synthetic_root, tmp_path, **unlabeled, **{"teacher.enabled": False, "train.name": "b"})
    with pytest.raises(UserError, match=r"data\.unlabeled needs the teacher.*teacher\.enabled=true"):
        fit(no_teacher)
    neither = cfg_for(synthetic_root, tmp_path, **unlabeled, **{"teacher.enabled": False, "data.labels": "none",
                                                                "method.linguistic": "classifier", "train.name": "c"})
    with pytest.raises(UserError, match=r"data\.labels=none.*teacher\.enabled=true"):
        fit(neither)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))
    check_names(cfg_for(synthetic_root, tmp_path, **unlabeled))  # the valid combination passes


# --------------------------------------------------------------------------- cache and training

@pytest.fixture(scope="module")
def pooled(synthetic_root, splits, tmp_path_factory):
    """A cache built without a pool first, then with it: the labeled part's files before and after, the
    shards the second build saved, and the config with the pool (20 training copies + 2 test copies)."""
    tmp = tmp_path_factory.mktemp("pooled")
    pool = tmp / "pool"
    copy_images(splits.train, range(0, 200, 10), pool, "train")  # 20 kept
    copy_images(splits.test, [3, 50], pool / "web", "test")  # 2 dropped
    cfg = cfg_for(synthetic_root, tmp, **{"data.unlabeled": str(pool), "student.arch": "mobilenet_v3_small"})
    plain = with_overrides(cfg, {"data.unlabeled": ""})
    build_cache(plain)
    root = Path(cfg.teacher.cache)
    labeled_files = sorted(p for p in root.iterdir() if p.is_file() and p.name != "text.npy")

    def state():  # meta.json is written again by every build (same bytes): its mtime says nothing
        return {p.name: (p.name == "meta.json" or p.stat().st_mtime_ns, p.read_bytes()) for p in labeled_files}

    before = state()
    saved = []
    real = cache_mod._save_shard

    def recording(where, s, *args):
        saved.append((Path(where), s))
        return real(where, s, *args)

    cache_mod._save_shard = recording
    try:
        build_cache(cfg)
    finally:
        cache_mod._save_shard = real
    return {"cfg": cfg, "plain": plain, "before": before, "after": state(), "saved": saved,
            "labeled_files": labeled_files, "pool": pool}


def test_cache_pool_part_is_separate_and_the_labeled_part_does_not_depend_on_the_pool(pooled, splits):
    cfg, root = pooled["cfg"], Path(pooled["cfg"].teacher.cache)
    assert fingerprint_fields(cfg, splits) == fingerprint_fields(pooled["plain"], splits)
    assert {p.name for p in pooled["labeled_files"]} >= {"meta.json", "shard_00000.npy", "shard_00002.json",
                                                         "val.npy", "val.json"}
    assert pooled["after"] == pooled["before"]  # neither rewritten nor changed by the pool's build
    pool = load_pool(cfg.data, splits, verbose=False)
    fields = pool_fingerprint_fields(cfg, pool.hashes)
    part = pool_dir(root, fields)
    assert part.parent == root and part.name.startswith("unlabeled-")
    assert pooled["saved"] and all(where == part for where, _ in pooled["saved"])  # only the pool's shards
    assert json.loads((part / "meta.json").read_text())["num_views"] == 2
    pool_cache = open_pool_cache(root, fields)
    assert pool_cache.meta.num_images == POOL_IMAGES and pool_cache.num_views == 2
    assert sum(s.array.shape[0] for s in pool_cache.shards) == POOL_IMAGES
    assert pool_cache.shards[0].array.shape[1:] == (2, 64)
    labeled = open_cache(root, fingerprint_fields(cfg, splits))
    assert labeled.meta.num_images == 210 and labeled.num_views == 1
    assert describe_cache(cfg) == f"210 images x 1 views, unlabeled: {POOL_IMAGES} images x 2 views"
    # another number of views is another pool part beside it, the labeled part shared
    other = pool_fingerprint_fields(with_overrides(cfg, {"teacher.unlabeled_views": 3}), pool.hashes)
    assert pool_dir(root, other) != part
    with pytest.raises(UserError, match="does not exist"):
        open_pool_cache(root, other)

    # training reads the pool's targets from the pool's part (its own K), the labeled ones from the labeled part
    side = teacher_side(cfg, splits, torch.device("cpu"), pool)
    assert (side.num_views, side.pool_views) == (1, 2)
    idx, views = torch.tensor([0, 19, 7]), torch.tensor([1, 0, 1])
    assert torch.equal(side.pool_targets(torch.empty(0), idx, views), pool_cache.lookup(idx, views))
    zeros = torch.zeros(3, dtype=torch.long)
    assert torch.equal(side.targets(torch.empty(0), idx, zeros), labeled.lookup(idx, zeros))
    assert not torch.allclose(side.pool_targets(torch.empty(0), idx, zeros), labeled.lookup(idx, zeros), atol=1e-3)

    # the cached pool embeddings are the teacher's embeddings of the very views training replays
    sampler = pool_view_sampler(cfg.data, cfg.teacher.cache_seed)
    torch.manual_seed(cfg.teacher.cache_seed)
    teacher = Teacher(cfg.teacher.model, cfg.teacher.pretrained, torch.device("cpu"))
    items = [(0, 0), (11, 1), (19, 1)]
    xs = [sampler.sample(pool.source, i, v, [teacher.target])[0][0] for i, v in items]
    fresh = teacher.encode_images(torch.stack(xs))
    idx, views = (torch.tensor(c) for c in zip(*items))
    assert torch.allclose(pool_cache.lookup(idx, views), fresh, atol=2e-3)
    assert not torch.allclose(pool_cache.lookup(idx, 1 - views), fresh, atol=2e-3)


def count_steps(monkeypatch) -> list[tuple[int, int]]:
    """(labeled, unlabeled) batch sizes of every training step."""
    steps, real = [], method_mod.step_losses

    def counting(student, heads, x, y, t, method, w_cls, y2=None, lam=None, x_u=None, t_u=None, z2_u=None):
        if student.training:
            steps.append((0 if x is None else len(x), 0 if x_u is None else len(x_u)))
            if y is not None:
                assert bool((y >= 0).all())  # the pool's NO_LABEL never reaches CE
        return real(student, heads, x, y, t, method, w_cls, y2, lam, x_u, t_u, z2_u)

    monkeypatch.setattr(method_mod, "step_losses", counting)
    return steps


def no_teacher(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the teacher must not run when training from a cache")

    monkeypatch.setattr(Teacher, "encode_images", refuse)
    monkeypatch.setattr(Teacher, "__init__", refuse)


def test_training_with_a_cached_pool_takes_one_pool_pass_per_epoch_without_the_teacher(pooled, monkeypatch):
    cfg = with_overrides(pooled["cfg"], {"train.name": "pooled"})
    no_teacher(monkeypatch)
    steps = count_steps(monkeypatch)
    best = fit(cfg)
    run = best.parent
    # an epoch is one pass over the pool in batches of POOL_BU (drop_last: 3 steps), each beside POOL_B labeled
    assert steps == [(POOL_B, POOL_BU)] * (2 * 3)
    results = json.loads((run / "results.json").read_text())
    assert results["unlabeled"] == {"images": POOL_IMAGES, "listed": POOL_IMAGES + 2, "dropped_val_test_copies": 2,
                                    "labels": "given"}
    records = records_of(run)
    assert len(records) == 2
    for r in records:
        for key in ("train_loss", "train_cls", "train_vis", "train_ling", "train_vis_u", "train_ling_u"):
            assert math.isfinite(r[key]), key
        assert r["images_per_s"] * r["epoch_time_s"] == pytest.approx(3 * (POOL_B + POOL_BU), rel=1e-6)
    assert results["test"]["images"] == 80 and results["test"]["teacher_zero_shot_top1"] is None


def test_fresh_student_views_noise_only_the_pool_and_keep_the_cached_targets(pooled, monkeypatch):
    """data.unlabeled_student_view=fresh: every pool image of every step is the student's own view (of the epoch),
    the labeled images are not, and the cached teacher targets serve it (the teacher never runs)."""
    cfg = with_overrides(pooled["cfg"], {"train.name": "fresh", "data.unlabeled_student_view": "fresh"})
    no_teacher(monkeypatch)
    steps = count_steps(monkeypatch)
    noised, real = [], TrainViews._noised

    def recording(self, index, view):
        noised.append((len(self.source), self.view_of.epoch))
        return real(self, index, view)

    monkeypatch.setattr(TrainViews, "_noised", recording)
    fit(cfg)
    assert steps == [(POOL_B, POOL_BU)] * (2 * 3)
    assert sorted(set(noised)) == [(POOL_IMAGES, 0), (POOL_IMAGES, 1)]  # the pool only, each epoch's own view
    assert len(noised) >= 2 * 3 * POOL_BU


def test_training_with_the_teacher_online_embeds_every_pool_batch_beside_the_labeled_one(pooled, monkeypatch):
    cfg = with_overrides(pooled["cfg"], {"train.name": "online", "teacher.cache": "online", "train.epochs": 1})
    steps = count_steps(monkeypatch)
    sizes, real = [], Teacher.encode_images

    def recording(self, x):
        sizes.append(len(x))
        return real(self, x)

    monkeypatch.setattr(Teacher, "encode_images", recording)
    best = fit(cfg)
    assert steps == [(POOL_B, POOL_BU)] * 3
    assert sizes[-6:] == [POOL_B, POOL_BU] * 3  # each step: the labeled views, then the pool's own views
    record = records_of(best.parent)[0]
    assert math.isfinite(record["train_vis_u"]) and math.isfinite(record["train_ling_u"])
    assert json.loads((best.parent / "results.json").read_text())["unlabeled"]["images"] == POOL_IMAGES


def test_labels_none_trains_on_the_pool_alone_and_keeps_the_final_epoch(pooled, monkeypatch):
    cfg = with_overrides(pooled["cfg"], {"train.name": "nolabels", "data.labels": "none",
                                         "method.linguistic": "classifier", "method.anchors": "calibrated"})
    steps = count_steps(monkeypatch)
    best = fit(cfg)
    run = best.parent
    assert steps == [(0, POOL_BU)] * 6  # pool batches only, 3 per epoch
    records = records_of(run)
    assert [r["best"] for r in records] == [False, True]  # validation measures, the final epoch is kept
    for r in records:
        assert "train_cls" not in r and "train_vis" not in r and "train_ling" not in r
        assert math.isfinite(r["train_vis_u"]) and math.isfinite(r["train_ling_u"])
        assert r["train_loss"] == pytest.approx((r["train_vis_u"] + r["train_ling_u"]) / 2, rel=1e-5)
    _, meta = read_checkpoint(best)
    assert meta.epoch == cfg.train.epochs
    results = json.loads((run / "results.json").read_text())
    assert results["best_epoch"] == cfg.train.epochs
    assert results["unlabeled"]["labels"] == "none"
    test = results["test"]
    assert 0.0 <= test["teacher_zero_shot_top1"] <= 1.0 and 0.0 <= test["agreement_with_teacher"] <= 1.0
    diag = results["teacher"]
    assert diag["anchors"] == "text" and "data.labels=none" in diag["calibration_reason"]
    # the default zero-shot prior is balanced over the pool: the distilled target and its figures are recorded
    assert "balanced over the unlabeled images" in diag["calibration_reason"]
    assert 0.0 <= diag["balanced_zero_shot_val_top1"] <= 1.0
    assert 0.0 <= test["teacher_balanced_zero_shot_top1"] <= 1.0 and 0.0 <= test["agreement_with_balanced_teacher"] <= 1


def test_balance_prior_makes_the_pools_mean_prediction_uniform_and_lifts_a_collapsed_zero_shot():
    from distill.calibrate import balance_prior

    torch.manual_seed(0)
    classes, d = 4, 16
    anchors = torch.nn.functional.normalize(torch.randn(classes, d), dim=-1)  # (C, D)
    y = torch.arange(400) % classes  # balanced classes
    # every image leans towards its class and, more, towards class 0: zero-shot collapses onto class 0
    t = torch.nn.functional.normalize(anchors[y] + 1.5 * anchors[0] + 0.3 * torch.randn(400, d), dim=-1)
    scale = 1 / 0.07
    raw = (scale * t @ anchors.t()).argmax(1)
    bias = balance_prior(t, anchors, scale)
    mean = torch.softmax(scale * t @ anchors.t() + bias, dim=1).mean(0)
    assert torch.allclose(mean, torch.full((classes,), 1 / classes), atol=1e-3)
    assert abs(float(bias.sum())) < 1e-4  # centred: softmax ignores a common shift
    balanced = (scale * t @ anchors.t() + bias).argmax(1)
    assert float(raw.eq(y).float().mean()) < 0.5 < float(balanced.eq(y).float().mean())


def test_classifier_kd_with_a_prior_bias_is_kd_against_the_shifted_teacher_logits():
    from distill.losses import classifier_kd_loss

    torch.manual_seed(1)
    t, T = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1), torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    logits, bias = torch.randn(6, 3), torch.tensor([0.5, -1.0, 0.5])
    got = classifier_kd_loss(t, T, logits, 2.0, 14.0, bias)
    log_p = torch.log_softmax((14.0 * t @ T.t() + bias) / 2.0, dim=-1)
    want = 4.0 * (log_p.exp() * (log_p - torch.log_softmax(logits / 2.0, dim=-1))).sum(1).mean()
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(classifier_kd_loss(t, T, logits, 2.0, 14.0, torch.zeros(3)),
                          classifier_kd_loss(t, T, logits, 2.0, 14.0))


# --------------------------------------------------------------------------- the labeled stream

def test_stream_sampler_chains_seeded_permutations_and_splits_them_between_ranks():
    n, count, seed = 7, 20, (3, 1)
    one = list(StreamSampler(n, count, seed))
    assert len(StreamSampler(n, count, seed)) == count and len(one) == count
    for start in range(0, count - n + 1, n):  # every whole pass shows every image once
        assert sorted(one[start:start + n]) == list(range(n))
    assert len(set(one[14:])) == 6  # the last, partial pass repeats none
    assert list(StreamSampler(n, count, seed)) == one  # a pure function of the seed
    assert list(StreamSampler(n, count, (4, 1))) != one and list(StreamSampler(n, count, (3, 2))) != one
    assert list(StreamSampler(n, 3, seed)) == one[:3]

    ranks = [list(StreamSampler(n, count, seed, rank, 2)) for rank in range(2)]
    both = list(StreamSampler(n, 2 * count, seed))
    assert all(len(r) == count for r in ranks) and len(StreamSampler(n, count, seed, 1, 2)) == count
    assert ranks[0] == both[0::2] and ranks[1] == both[1::2]  # interleaved shares of one stream
    assert both[:count] == one  # the longer stream starts as the shorter one
    merged = [None] * (2 * count)
    merged[0::2], merged[1::2] = ranks
    assert merged == both


# --------------------------------------------------------------------------- losses

def test_unlabeled_kd_loss_is_the_weighted_mean_of_its_two_terms():
    kd = {"vis": torch.tensor(0.3), "ling": torch.tensor(0.7)}
    assert float(unlabeled_kd_loss(kd, {"vis": 1.0, "ling": 1.0})) == pytest.approx(0.5)
    assert float(unlabeled_kd_loss(kd, {"vis": 2.0, "ling": 0.5})) == pytest.approx((2.0 * 0.3 + 0.5 * 0.7) / 2)
    assert float(unlabeled_kd_loss(kd, {"vis": 0.0, "ling": 1.0})) == pytest.approx(0.35)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    student = create_student("resnet18", 5, "none")
    heads = Condensation(F.normalize(torch.randn(5, 16), dim=-1), student.feature_dim, "l1", "classifier")
    batch = {"x": torch.randn(4, 3, 32, 32), "y": torch.tensor([0, 3, 1, 4]),
             "t": F.normalize(torch.randn(4, 16), dim=-1), "x_u": torch.randn(3, 3, 32, 32),
             "t_u": F.normalize(torch.randn(3, 16), dim=-1)}
    return student.eval(), heads, batch


def test_step_losses_without_labels_is_the_unlabeled_kd_loss(tiny):
    student, heads, b = tiny
    method = from_dict(MethodConfig, {"linguistic": "classifier", "w_vis": 1.5, "w_ling": 0.5, "w_unlabeled": 0.3})
    out = step_losses(student, heads, None, None, None, method, 0.4, x_u=b["x_u"], t_u=b["t_u"])
    assert set(out) == {"loss", "vis_u", "ling_u"}  # no CE without labels
    h = student.features(b["x_u"])
    kd = kd_terms(heads, h, student.classifier(h), b["t_u"], method)
    assert torch.allclose(out["vis_u"], kd["vis"], atol=1e-6) and torch.allclose(out["ling_u"], kd["ling"], atol=1e-6)
    # L = L_u itself: neither w_unlabeled nor w_cls scales it without labels
    assert torch.allclose(out["loss"], (1.5 * kd["vis"] + 0.5 * kd["ling"]) / 2, atol=1e-6)
    out["loss"].backward()
    assert student.classifier.weight.grad is not None and student.classifier.weight.grad.abs().sum() > 0


def test_step_losses_with_both_batches_adds_the_weighted_unlabeled_term(tiny):
    student, heads, b = tiny
    method = MethodConfig(linguistic="classifier", w_unlabeled=0.7)
    w_cls = 0.4
    both = step_losses(student, heads, b["x"], b["y"], b["t"], method, w_cls, x_u=b["x_u"], t_u=b["t_u"])
    labeled = step_losses(student, heads, b["x"], b["y"], b["t"], method, w_cls)
    alone = step_losses(student, heads, None, None, None, method, w_cls, x_u=b["x_u"], t_u=b["t_u"])
    for key in ("cls", "vis", "ling"):
        assert torch.allclose(both[key], labeled[key], atol=1e-5), key
    kd = {"vis": labeled["vis"], "ling": labeled["ling"]}
    assert torch.allclose(labeled["loss"], vl2lite_loss(labeled["cls"], kd, {"vis": 1.0, "ling": 1.0}, w_cls),
                          atol=1e-6)
    assert torch.allclose(labeled["loss"], w_cls * labeled["cls"] + (1 - w_cls) * (kd["vis"] + kd["ling"]) / 2,
                          atol=1e-6)
    assert torch.allclose(both["loss"], labeled["loss"] + 0.7 * alone["loss"], atol=1e-5)
    assert not torch.allclose(both["loss"], labeled["loss"], atol=1e-3)  # the pool's term is really there
    off = step_losses(student, heads, b["x"], b["y"], b["t"], MethodConfig(linguistic="classifier", w_unlabeled=0.0),
                      w_cls, x_u=b["x_u"], t_u=b["t_u"])
    assert torch.allclose(off["loss"], labeled["loss"], atol=1e-5)


# --------------------------------------------------------------------------- compare

def test_default_arms_add_kd_plus_unlabeled_only_with_a_pool(synthetic_root, tmp_path):
    pooled = cfg_for(synthetic_root, tmp_path, **{"data.unlabeled": str(tmp_path / "pool")})
    arms = default_arms(pooled)
    assert list(arms) == ["baseline", "kd", "kd+unlabeled"]
    configs = {arm: with_overrides(pooled, overrides) for arm, overrides in arms.items()}
    assert configs["baseline"].data.unlabeled == "" and not configs["baseline"].teacher.enabled
    assert configs["kd"].data.unlabeled == "" and configs["kd"].teacher.enabled
    assert configs["kd+unlabeled"] == pooled
    for c in configs.values():
        check_names(c)  # every arm is a valid run (the baseline has no pool to need a teacher for)

    plain = cfg_for(synthetic_root, tmp_path)
    assert list(default_arms(plain)) == ["baseline", "kd"]
    assert not with_overrides(plain, default_arms(plain)["baseline"]).teacher.enabled

    no_labels = with_overrides(pooled, {"data.labels": "none", "method.linguistic": "classifier"})
    with pytest.raises(UserError, match=r"data\.labels=none"):
        default_arms(no_labels)
