"""Runtime library: torch-free import, preprocessing parity, bundle checks, backends, predict, batcher."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from formats.bundle import load_bundle
from formats.errors import UserError
from formats.labels import clean_class_name
from formats.preprocessing import PreprocessSpec, open_image, preprocess_image
from runtime.backends import available_backends, get_backend, list_backends
from runtime.backends.tensorrt import engine_problems
from runtime.dataset import load_labelled_images
from runtime.device import parse_tegrastats
from runtime.model import open_classifier, softmax
from runtime.predict import predict_files
from runtime.serve.batcher import DynamicBatcher, QueueFull, ShuttingDown
from runtime.serve.metrics import ServeMetrics
from tests.runtime_helpers import PRE, REPO, make_images


@pytest.fixture(scope="session")
def bundle(exported_bundle) -> Path:
    return exported_bundle


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> list[Path]:
    return make_images(tmp_path_factory.mktemp("images"))


# --------------------------------------------------------------------------- preprocessing parity

SPECS = [
    PRE,
    {**PRE, "input_size": [56, 48], "resize_size": 61, "interpolation": "bicubic",
     "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 0.3]},
    {**PRE, "input_size": [64, 64], "resize_size": 50, "interpolation": "nearest"},  # crop larger than image: padding
]


@pytest.mark.parametrize("pre", SPECS, ids=["default", "bicubic-rect", "pad"])
def test_preprocessing_matches_torchvision_eval_transform(pre: dict, images: list[Path]) -> None:
    """numpy/Pillow vs distill.transforms.eval_transform (torchvision) on real files: |diff| <= 1e-5."""
    from distill.transforms import eval_transform
    reference = eval_transform(pre)
    spec = PreprocessSpec.from_dict(pre)
    for path in images:
        ours = preprocess_image(open_image(path), spec)
        theirs = reference(Image.open(path)).numpy()
        assert ours.shape == theirs.shape == (3, *pre["input_size"])
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5, err_msg=str(path))


def test_open_image_refuses_bad_input(tmp_path: Path, images: list[Path]) -> None:
    data = images[0].read_bytes()
    with pytest.raises(UserError, match="not an image") as e:
        open_image(b"not an image at all")
    assert e.value.status == 400
    with pytest.raises(UserError, match="truncated") as e:
        open_image(data[: len(data) // 2])
    assert e.value.status == 400
    with pytest.raises(UserError, match="over the limit") as e:
        open_image(data, max_pixels=100)
    assert e.value.status == 413


# --------------------------------------------------------------------------- bundle

def _copy_bundle(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.is_dir():
            shutil.copytree(f, dst / f.name)
        else:
            (dst / f.name).symlink_to(f) if f.suffix == ".onnx" else shutil.copy(f, dst / f.name)
    return dst


def test_bundle_loads_and_checks(bundle: Path, tmp_path: Path) -> None:
    b = load_bundle(bundle)
    assert b.num_classes == 10 and b.input_name == "input" and b.artifacts[0].file == "model.onnx"
    incomplete = _copy_bundle(bundle, tmp_path / "incomplete")
    (incomplete / "manifest.json").unlink()
    with pytest.raises(UserError, match="not a complete bundle \\(no manifest.json\\): run python -m export"):
        load_bundle(incomplete)
    corrupt = _copy_bundle(bundle, tmp_path / "corrupt")
    (corrupt / "labels.txt").write_text("tampered\n")
    with pytest.raises(UserError, match="labels.txt is corrupt.*python -m export"):
        load_bundle(corrupt)
    with pytest.raises(UserError, match="has no artifact 'model.int4.onnx'"):
        b.artifact("model.int4.onnx")


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["artifacts"][0].update(file="../outside.onnx"), "path outside the bundle"),
    (lambda m: m["artifacts"][0].update(file="/etc/passwd"), "path outside the bundle"),
    (lambda m: m.update(labels="../labels.txt"), "path outside the bundle"),
    (lambda m: m["files"].update({"../../secret": "0" * 64}), "path outside the bundle"),
    (lambda m: m["artifacts"][0].pop("format"), "artifacts\\[0\\] lacks the field 'format'"),
    (lambda m: m["artifacts"][0].update(precision="int4"), "precision 'int4' is not one of fp32, fp16, int8"),
    (lambda m: m["artifacts"][0].update(size_bytes="big"), "artifacts\\[0\\]: size_bytes must be int, not str"),
    (lambda m: m.update(input=["input"]), "input must be a JSON object, not list"),
    (lambda m: m.update(max_batch="many"), "max_batch must be int, not str"),
    (lambda m: m.update(max_batch=0), "max_batch 0; it must be at least 1"),
    (lambda m: m.update(files=["labels.txt"]), "files must be a JSON object, not list"),
    (lambda m: m.pop("max_batch"), "lacks the field 'max_batch'"),  # no silent default
    (lambda m: m.update(maxbatch=8), "unknown field 'maxbatch'"),
])
def test_malformed_or_escaping_manifest_is_one_clear_error(bundle: Path, tmp_path: Path, edit, message) -> None:
    bad = _copy_bundle(bundle, tmp_path / "bad")
    manifest = json.loads((bad / "manifest.json").read_text())
    edit(manifest)
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=message):
        load_bundle(bad)


# --------------------------------------------------------------------------- backends

def test_backend_registry_names_and_errors(bundle: Path) -> None:
    assert {"onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt"} <= set(list_backends())
    with pytest.raises(UserError, match="unknown backend 'tflite'.*onnxruntime-cpu"):
        get_backend("tflite")
    for name in set(list_backends()) - set(available_backends()):
        with pytest.raises(UserError, match="not usable here"):
            open_classifier(bundle, name, "model.onnx" if get_backend(name).formats == {"onnx"} else None)


@pytest.mark.skipif("tensorrt" in available_backends(), reason="TensorRT is installed here")
def test_tensorrt_missing_is_a_clear_error() -> None:
    assert get_backend("tensorrt").unavailable_reason().startswith("TensorRT is not installed")


@pytest.mark.parametrize("backend", [b for b in available_backends() if b != "tensorrt"])
def test_every_available_backend_agrees_with_cpu(backend: str, bundle: Path) -> None:
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32), dtype=np.float32)
    ref = open_classifier(bundle, "onnxruntime-cpu").logits(x)
    out = open_classifier(bundle, backend).logits(x)
    assert out.shape == (3, 10)
    np.testing.assert_allclose(out, ref, atol=1e-2 if "cuda" in backend or "tensorrt" in backend else 1e-5)


SIDECAR = {"tensorrt": "10.3.0", "cuda": "12.6", "gpu": "Orin", "compute_capability": "8.7", "precision": "fp16",
           "source": "model.fp16.onnx", "strongly_typed": False, "min_batch": 1, "opt_batch": 8, "max_batch": 32,
           "workspace_gib": 2.0, "timing_cache": "timing.cache", "schema": "vl2lite-engine-sidecar",
           "schema_version": 1}


def test_engine_sidecar_check_is_strict(tmp_path: Path) -> None:
    from formats.engine import EngineSidecar, read_sidecar

    built = EngineSidecar(**SIDECAR)
    assert engine_problems(built, {"tensorrt": "10.3.0.30", "cuda": "12.6", "gpu": "Orin",
                                   "compute_capability": "8.7"}) == ([], [])
    errors, _ = engine_problems(built, {"tensorrt": "10.7.0", "cuda": "13.0", "gpu": "Orin", "compute_capability": "8.7"})
    assert any("TensorRT 10.3.0" in e for e in errors) and any("CUDA 12.6" in e for e in errors)
    # torch's CUDA (export) and the CUDA runtime (here) may differ in the minor: compatible
    assert engine_problems(built, {"tensorrt": "10.3.0", "cuda": "12.8", "gpu": "Orin",
                                   "compute_capability": "8.7"}) == ([], [])
    errors, _ = engine_problems(built, {"tensorrt": "10.3.0", "cuda": "12.6", "gpu": "RTX 4090", "compute_capability": "8.9"})
    assert errors == ["built with compute capability 8.7, this device has 8.9"]
    errors, warnings = engine_problems(built, {"tensorrt": "10.3.0", "cuda": "12.6", "gpu": "Jetson AGX Orin",
                                               "compute_capability": "8.7"})
    assert errors == [] and "rebuild on this GPU" in warnings[0]
    path = tmp_path / "model.fp16.engine.json"
    path.write_text(json.dumps(SIDECAR))
    assert read_sidecar(path) == built
    path.write_text(json.dumps({k: v for k, v in SIDECAR.items() if k != "cuda"}))  # an engine's CUDA unknown
    with pytest.raises(UserError, match="lacks the field 'cuda'.*rebuild the engine with python -m export --trt"):
        read_sidecar(path)
    path.write_text(json.dumps({**SIDECAR, "schema_version": 2}))
    with pytest.raises(UserError, match="schema version 2"):
        read_sidecar(path)


# --------------------------------------------------------------------------- predict

def test_predict_files_top_k(bundle: Path, images: list[Path]) -> None:
    results = predict_files(bundle, images[:3], top_k=3)
    clf = open_classifier(bundle, "onnxruntime-cpu")
    for path, r in zip(images, results):
        probs = [p["probability"] for p in r["predictions"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        expected = softmax(clf.logits(preprocess_image(open_image(path), clf.bundle.preprocessing)[None]))[0]
        assert r["predictions"][0]["index"] == int(expected.argmax())
        assert r["predictions"][0]["label"] == clf.bundle.labels[int(expected.argmax())]
        assert abs(probs[0] - float(expected.max())) < 1e-5


def test_predict_cli_json_and_errors(bundle: Path, images: list[Path]) -> None:
    cmd = [sys.executable, "-m", "runtime.predict", str(bundle), str(images[0]), str(images[2]), "--top-k", "2", "--json"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    results = json.loads(out.stdout)
    assert [r["image"] for r in results] == [str(images[0]), str(images[2])]
    assert all(len(r["predictions"]) == 2 for r in results)
    bad = subprocess.run([sys.executable, "-m", "runtime.predict", str(bundle / "nope"), str(images[0])],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: bundle folder") and "Traceback" not in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "runtime.predict", str(bundle), str(images[0]), "--backend", "tensorrt"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr


# --------------------------------------------------------------------------- evaluation data

def test_labelled_images_from_class_folders(tmp_path: Path, images: list[Path]) -> None:
    labels = ("Black footed Albatross", "Laysan Albatross")
    for folder, src in (("001.Black_footed_Albatross", images[0]), ("Laysan Albatross", images[1])):
        (tmp_path / folder).mkdir()
        shutil.copy(src, tmp_path / folder / src.name)
    items = load_labelled_images(tmp_path, labels)
    assert [y for _, y in items] == [0, 1]
    (tmp_path / "003.Sooty_Albatross").mkdir()
    with pytest.raises(UserError, match="'003.Sooty_Albatross'.*matches no label"):
        load_labelled_images(tmp_path, labels)


def test_labelled_images_from_a_train_and_test_root_are_its_test_split(tmp_path: Path, images: list[Path]) -> None:
    labels = ("Black footed Albatross", "Laysan Albatross")
    for split, k in (("train", 0), ("test", 1)):
        for i, folder in enumerate(("001.Black_footed_Albatross", "002.Laysan_Albatross")):
            (tmp_path / split / folder).mkdir(parents=True)
            shutil.copy(images[(i + k) % len(images)], tmp_path / split / folder / f"{split}_{i}.jpg")
    items = load_labelled_images(tmp_path, labels)  # the layout training accepts: bench takes its test/
    assert [(p.parent.parent.name, y) for p, y in items] == [("test", 0), ("test", 1)]


def test_labelled_images_cub_test_split(tmp_path: Path) -> None:
    from distill.synthetic import generate, species
    root = generate(tmp_path / "birds", num_classes=3, train_per_class=2, test_per_class=2, size_range=(32, 40))
    labels = tuple(sorted(clean_class_name(name) for name, _ in species(3)))  # another order than classes.txt
    items = load_labelled_images(root, labels)
    assert len(items) == 6 and all("_000" in p.name and p.stem[-1] in "23" for p, _ in items)
    for path, y in items:  # the folder name (CUB class) must agree with the label index by name
        assert labels[y].replace(" ", "_") in path.parent.name
    (root / "images.txt").write_text("1 a.jpg\nnot-a-number b.jpg\n")
    with pytest.raises(UserError, match="images.txt line 2 is 'not-a-number b.jpg'"):
        load_labelled_images(root, labels)
    (root / "images.txt").write_text("1 a.jpg\n")
    (root / "train_test_split.txt").write_text("1 0\n")
    (root / "image_class_labels.txt").write_text("1 99\n")
    with pytest.raises(UserError, match="no class in image_class_labels.txt"):
        load_labelled_images(root, labels)


# --------------------------------------------------------------------------- batcher, metrics, tegrastats

def test_batcher_batches_bounds_and_drains() -> None:
    calls: list[int] = []
    gate = threading.Event()

    def run(x: np.ndarray) -> np.ndarray:
        gate.wait(5)
        calls.append(len(x))
        return x.reshape(len(x), -1)[:, :2] * 2

    b = DynamicBatcher(run, max_batch=4, max_delay_s=0.2, max_queue=3)
    xs = [np.full((1, 3, 2, 2), i, np.float32) for i in range(3)]
    futures = [b.submit(x) for x in xs]
    with pytest.raises(QueueFull):
        b.submit(xs[0])  # three requests wait: the queue is full
    gate.set()
    outs = [f.result(5) for f in futures]
    assert calls == [3] and [float(o[0, 0]) for o in outs] == [0.0, 2.0, 4.0]
    gate.clear()
    late = b.submit(np.ones((2, 3, 2, 2), np.float32))
    threading.Timer(0.05, gate.set).start()
    b.close()  # accepted requests are finished before close returns
    assert late.done() and late.result().shape == (2, 2)
    with pytest.raises(ShuttingDown):
        b.submit(xs[0])


def test_batcher_splits_at_max_batch() -> None:
    seen: list[int] = []
    b = DynamicBatcher(lambda x: (seen.append(len(x)), x[:, 0, 0, :1])[1], max_batch=4, max_delay_s=0.1, max_queue=10)
    futures = [b.submit(np.zeros((n, 3, 1, 1), np.float32)) for n in (3, 2, 1)]
    assert [f.result(5).shape[0] for f in futures] == [3, 2, 1]
    b.close()
    assert sorted(seen) == [3, 3] and sum(seen) == 6


def test_batcher_survives_model_errors_cancellation_and_a_failing_hook() -> None:
    gate, seen = threading.Event(), []

    def run(x: np.ndarray) -> np.ndarray:
        gate.wait(5)
        seen.append(len(x))
        if x[0, 0, 0, 0] < 0:
            raise KeyboardInterrupt  # even a BaseException must reach the waiters, not kill the worker
        return x[:, 0, 0, :1]

    def hook(rows: int, seconds: float) -> None:
        raise ValueError("metrics broke")

    b = DynamicBatcher(run, max_batch=2, max_delay_s=1.0, max_queue=10, on_batch=hook)
    failing = [b.submit(np.full((1, 3, 1, 1), -1, np.float32)) for _ in range(2)]  # one batch of 2
    cancelled = b.submit(np.ones((1, 3, 1, 1), np.float32))
    kept = b.submit(np.full((1, 3, 1, 1), 7, np.float32))
    assert cancelled.cancel()  # still queued: the client went away
    gate.set()
    for f in failing:
        with pytest.raises(RuntimeError, match="model run aborted: KeyboardInterrupt"):
            f.result(5)
    assert float(kept.result(5)[0, 0]) == 7.0  # the worker lived through the error, the hook and the cancel
    after = b.submit(np.full((1, 3, 1, 1), 3, np.float32))
    assert float(after.result(5)[0, 0]) == 3.0
    b.close()
    assert seen == [2, 1, 1]  # the cancelled request never ran


def test_metrics_prometheus_text() -> None:
    """The names, labels and buckets docs/runtime.md gives, each server its own series."""
    m, other = ServeMetrics(), ServeMetrics()  # two servers in one process: no clash, no shared series
    depth = [3]
    m.watch(lambda: depth[0], lambda: 2, lambda: 1)
    m.request("/predict", 200, 0.004)
    m.request("/predict", 200, 0.3)
    m.batch(5, 0.002)
    depth[0] = 7  # the gauges are read when scraped
    text = m.render().decode()
    assert 'vl2lite_requests_total{endpoint="/predict",status="200"} 2.0' in text
    assert "# TYPE vl2lite_request_seconds histogram" in text and "# TYPE vl2lite_requests_total counter" in text
    assert 'vl2lite_request_seconds_bucket{endpoint="/predict",le="0.005"} 1.0' in text
    assert 'vl2lite_request_seconds_bucket{endpoint="/predict",le="0.25"} 1.0' in text
    assert 'vl2lite_request_seconds_bucket{endpoint="/predict",le="+Inf"} 2.0' in text
    assert 'vl2lite_batch_size_bucket{le="4.0"} 0.0' in text and 'vl2lite_batch_size_bucket{le="8.0"} 1.0' in text
    assert "vl2lite_inference_seconds_count 1.0" in text
    assert "vl2lite_queue_depth 7.0" in text and "vl2lite_uploads_in_progress 2.0" in text
    assert "vl2lite_requests_in_flight 1.0" in text
    m.request('a"b\\c\nd', 404, 0.1)
    assert 'endpoint="a\\"b\\\\c\\nd"' in m.render().decode()  # quote, backslash and newline escaped
    assert "vl2lite_requests_total{" not in other.render().decode()


def test_parse_tegrastats_lines() -> None:
    orin = ("RAM 2448/30536MB (lfb 6815x4MB) CPU [0%@729,0%@729] GR3D_FREQ 0% cpu@44.5C "
            "VDD_GPU_SOC 1596mW/1596mW VDD_CPU_CV 399mW/399mW VIN_SYS_5V0 2718mW/2718mW VDD_IN 5123mW/5001mW")
    assert parse_tegrastats(orin)["VDD_IN"] == 5123 and parse_tegrastats(orin)["VDD_GPU_SOC"] == 1596
    nano = "RAM 1000/3964MB CPU [5%@1479] EMC_FREQ 0% GR3D_FREQ 0% POM_5V_IN 3107/3107 POM_5V_GPU 0/0"
    assert parse_tegrastats(nano) == {"POM_5V_IN": 3107, "POM_5V_GPU": 0}
    assert parse_tegrastats("RAM 1/2MB") == {}


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_bounded_resize_matches_the_exact_path(interpolation: str, images: list[Path]) -> None:
    """The crop-region resize (used above MAX_RESIZED_PIXELS) against the full resize + crop, forced on
    ordinary images: the same filter taps, but each of Pillow's two passes rounds to 8 bits on its own
    region, so a few pixels land a few levels of 255 apart (the exact path serves every image whose
    resized size is under MAX_RESIZED_PIXELS: an aspect ratio up to 61:1 at a 256 resize)."""
    from formats.preprocessing import _FILTERS, _resize_and_crop
    for path in images:
        img = open_image(path).convert("RGB")
        for size, crop in ((256, (224, 224)), (73, (64, 64)), (50, (64, 64))):  # the last pads
            exact = np.asarray(_resize_and_crop(img, size, crop, _FILTERS[interpolation])).astype(int)
            bounded = np.asarray(_resize_and_crop(img, size, crop, _FILTERS[interpolation], max_resized=0)).astype(int)
            assert exact.shape == bounded.shape == (*crop, 3)
            diff = np.abs(exact - bounded)
            assert diff.max() <= 8 and diff.mean() < 0.5, str(path)


def test_an_extreme_aspect_ratio_allocates_no_more_than_the_crop(tmp_path: Path) -> None:
    """A 2x400,000 PNG (a few kB) would resize to 256x51,200,000 pixels (39 GB); under a 1 GB
    address-space limit it preprocesses, in a fresh process, to the crop's shape."""
    path = tmp_path / "thin.png"
    Image.new("RGB", (2, 400_000), (200, 10, 10)).save(path)
    code = ("import resource, sys, numpy as np\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
            "from formats.preprocessing import PreprocessSpec, open_image, preprocess_image\n"
            f"spec = PreprocessSpec.from_dict({PRE!r})\n"
            f"x = preprocess_image(open_image({str(path)!r}), spec)\n"
            "print(x.shape, float(np.abs(x).max()))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"(3, {PRE['input_size'][0]}, {PRE['input_size'][1]})")


def test_a_corrupt_model_file_is_refused_by_whoever_loads_it(bundle: Path, tmp_path: Path) -> None:
    """open_classifier hashes only the file it opens; a corrupt one is still one clear error."""

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(UserError, match="model.onnx is corrupt"):
        open_classifier(copy, "onnxruntime-cpu", "model.onnx")
    assert open_classifier(copy, "onnxruntime-cpu", "model.int8.onnx").artifact.file == "model.int8.onnx"
