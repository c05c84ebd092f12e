"""JPEG draft decoding: the same geometry as exact decoding, measured by export, chosen by the runtime."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from formats.errors import UserError
from formats.labels import FileSource
from formats.preprocessing import DraftParity, PreprocessSpec, draft_reduces, load_input, open_image, preprocess_image
from tests.runtime_helpers import PRE, _smooth_image

SPEC = PreprocessSpec.from_dict(PRE)  # 64 px input, shorter side resized to 73


def _jpeg(path: Path, w: int, h: int, seed: int = 0, mode: str = "RGB") -> Path:
    img = Image.fromarray(_smooth_image(np.random.default_rng(seed), w, h)).convert(mode)
    img.save(path, quality=90)
    return path


@pytest.mark.parametrize("size", [(500, 375), (377, 501), (333, 311), (640, 149)])
def test_draft_decoding_keeps_the_exact_geometry(tmp_path: Path, size: tuple[int, int]) -> None:
    path = _jpeg(tmp_path / "a.jpg", *size)
    exact = load_input(path, SPEC)
    assert np.array_equal(exact, preprocess_image(open_image(path), SPEC))  # "exact" is the training transform
    with Image.open(path) as img:
        img.draft("RGB", (size[0] // 4, size[1] // 4))
        assert img.size[0] < size[0]  # libjpeg really decodes smaller
    assert draft_reduces(path, SPEC)
    draft = load_input(path, SPEC, decode="jpeg-draft")
    assert draft.shape == exact.shape == (3, 64, 64) and draft.dtype == np.float32
    diff = np.abs(draft - exact)
    assert 0 < diff.mean() < 0.06  # about 2 levels of 255 in std units, not a shifted or stretched crop
    # A crop one pixel off (what a resize size computed from the reduced image could give) is much further.
    shifted = np.abs(np.roll(exact, 1, axis=2) - exact)[:, :, 1:].mean()
    assert diff.mean() < shifted / 4


def test_draft_decoding_leaves_other_files_exact(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    Image.fromarray(_smooth_image(np.random.default_rng(0), 400, 300)).save(png)
    small = _jpeg(tmp_path / "small.jpg", 120, 100)  # under 2x the resized size: no reduction fits
    gray = _jpeg(tmp_path / "gray.jpg", 400, 300, mode="L")
    for path in (png, small):
        assert not draft_reduces(path, SPEC)
        assert np.array_equal(load_input(path, SPEC, decode="jpeg-draft"), load_input(path, SPEC))
    assert load_input(gray, SPEC, decode="jpeg-draft").shape == (3, 64, 64)  # grayscale JPEGs come out RGB
    with pytest.raises(UserError, match="decode 'fast' is not one of exact, jpeg-draft"):
        load_input(png, SPEC, decode="fast")


def _mean_colour_runner(x: np.ndarray) -> np.ndarray:
    """A stand-in classifier (B, 3, H, W) -> (B, 3): the class is the dominant channel."""
    return x.mean(axis=(2, 3))


def _labelled(root: Path, n: int, size: tuple[int, int]) -> FileSource:
    paths, labels = [], []
    for i in range(n):
        rng = np.random.default_rng(i)
        img = _smooth_image(rng, *size).astype(np.int16)
        img[..., i % 3] += 60  # class i % 3: that channel is brighter
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"{i}.jpg", quality=90)
        paths.append(root / f"{i}.jpg")
        labels.append(i % 3)
    return FileSource(paths, labels)


def test_export_measures_draft_parity_and_accepts_only_enough_evidence(tmp_path: Path) -> None:
    from export.evaluation import DRAFT_MIN_IMAGES, ImageBatches, jpeg_draft_parity, predict

    def parity(source, run, limit: int = 0) -> DraftParity:
        exact = predict(run, ImageBatches(source, SPEC.to_dict(), 16, limit))  # export's reference predictions
        return jpeg_draft_parity(source, SPEC, run, exact, batch_size=16)

    source = _labelled(tmp_path, DRAFT_MIN_IMAGES, (300, 200))
    measured = parity(source, _mean_colour_runner)
    assert measured.images == DRAFT_MIN_IMAGES and measured.accepted, measured.reason
    assert measured.top1_exact == measured.top1_draft == 1.0 and measured.agreement == 1.0
    few = parity(source, _mean_colour_runner, limit=10)
    assert few.images == 10 and not few.accepted and f"needs >= {DRAFT_MIN_IMAGES} JPEGs" in few.reason
    # A model that reads single pixel values flips with the decoding: refused.
    fragile = parity(source, lambda x: np.eye(2)[(np.floor(x[:, 0, 32, 32] * 50) % 2).astype(int)])
    assert fragile.images == DRAFT_MIN_IMAGES and fragile.agreement < 0.9 and not fragile.accepted
    (tmp_path / "small").mkdir()
    none = parity(_labelled(tmp_path / "small", 4, (80, 80)), _mean_colour_runner)
    assert none.images == 0 and not none.accepted and "no evaluation image" in none.reason


def test_spec_round_trips_the_measurement() -> None:
    parity = DraftParity(120, 0.8, 0.8083, 0.9917, True, "accepted: ...")
    spec = dataclasses.replace(SPEC, jpeg_draft=parity)
    assert PreprocessSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert PreprocessSpec.from_dict(SPEC.to_dict()).jpeg_draft is None
    with pytest.raises(UserError, match="jpeg_draft is malformed"):
        PreprocessSpec.from_dict({**SPEC.to_dict(), "jpeg_draft": {"images": 3}})


def test_the_runtime_drafts_only_where_export_accepted(exported_bundle: Path) -> None:
    from formats.bundle import load_bundle
    from runtime.model import decode_mode
    bundle = load_bundle(exported_bundle)
    recorded = bundle.preprocessing.jpeg_draft  # the fixture's test JPEGs are too small to reduce
    assert recorded is not None and recorded.images == 0 and not recorded.accepted
    assert decode_mode(bundle) == "exact" and decode_mode(bundle, "jpeg-draft") == "jpeg-draft"
    for accepted, mode in ((True, "jpeg-draft"), (False, "exact")):
        pre = dataclasses.replace(bundle.preprocessing, jpeg_draft=DraftParity(80, 0.9, 0.9, 1.0, accepted, ""))
        changed = dataclasses.replace(bundle, preprocessing=pre)
        assert decode_mode(changed) == mode and decode_mode(changed, "exact") == "exact"
    with pytest.raises(UserError, match="--decode 'draft' is not one of auto, exact, jpeg-draft"):
        decode_mode(bundle, "draft")


def test_predict_reports_and_honours_the_decode_mode(exported_bundle: Path, tmp_path: Path) -> None:
    from runtime.predict import predict_files
    path = _jpeg(tmp_path / "big.jpg", 500, 375)
    # FP32: the decode's own effect, not INT8's rounding on top (the default artifact may be INT8)
    exact, = predict_files(exported_bundle, [path], top_k=3, artifact="model.onnx")
    draft, = predict_files(exported_bundle, [path], top_k=3, artifact="model.onnx", decode="jpeg-draft")
    assert exact["decode"] == "exact" and draft["decode"] == "jpeg-draft"
    p_exact = [p["probability"] for p in exact["predictions"]]
    p_draft = [p["probability"] for p in draft["predictions"]]
    assert p_exact != p_draft and np.allclose(p_exact, p_draft, atol=0.05)
