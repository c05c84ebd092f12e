"""Inputs that used to crash the runtime (a 500, a traceback, a bundle nobody can read) and now get
one clear answer: the server's odd requests and disconnects, bundles whose files hash right but
disagree, and class names that labels.txt cannot hold.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import onnx
import pytest
from PIL import Image

from formats.bundle import MANIFEST, labels_text, load_bundle, parse_labels, write_labels
from formats.onnx_header import onnx_input_dims
from formats.datasets import DatasetSpec, load_splits
from formats.errors import UserError
from formats.files import sha256_file
from formats.labels import label_problem, read_cub, read_imagefolder
from runtime.model import open_classifier
from tests.runtime_helpers import REPO, make_images, start_server


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return make_images(tmp_path_factory.mktemp("hardening-images"))


@pytest.fixture(scope="module")
def server(exported_bundle: Path):
    """The FP32 model: its output overflows float32 on inputs near float32's limit (INT8 saturates)."""
    proc, url = start_server(exported_bundle, "--artifact", "model.onnx")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    proc.stdout.close()


def _input_size(bundle: Path) -> tuple[int, int]:
    h, w = json.loads((bundle / "preprocessing.json").read_text())["input_size"]
    return h, w


# --------------------------------------------------------------------------- requests that were 500

def test_odd_numbers_and_strings_answer_400_not_500(server: str, exported_bundle: Path, images: list[Path]) -> None:
    infer, predict = f"{server}/v2/models/{exported_bundle.name}/infer", f"{server}/predict"
    h, w = _input_size(exported_bundle)
    good = {"name": "input", "shape": [1, 3, h, w], "datatype": "FP32", "data": [0.0] * (3 * h * w)}
    jpeg = images[0].read_bytes()

    def raw(request: dict, id_json: str = '""') -> bytes:  # JSON with an escape json.dumps would not write
        return json.dumps(request)[:-1].encode() + b', "id": ' + id_json.encode() + b"}"

    cases = [
        (httpx.post(infer, json={"inputs": [{**good, "shape": [True, 3, h, w]}]}), "input shape [True, 3"),
        (httpx.post(infer, json={"inputs": [{**good, "shape": [1, 3, h, True]}]}), "JSON integers"),
        (httpx.post(infer, content=raw({"inputs": [good]}, '"\\ud800"')), "lone surrogate"),
        (httpx.post(infer, content=raw({"inputs": [good]}, '"ok \\udfff"')), "lone surrogate"),
        (httpx.post(infer, content=b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": "\\ud800"}]}'),
         "input shape '\\ud800' is wrong"),
        (httpx.post(infer, json={"inputs": [{**good, "data": [3e38] * len(good["data"])}]}), "not finite"),
        (httpx.post(f"{predict}?top_k=%C2%B2", content=jpeg), "ASCII digits"),  # "²".isdigit() is true
        (httpx.post(f"{predict}?top_k=%D9%A3", content=jpeg), "ASCII digits"),  # Arabic-Indic 3
        (httpx.post(f"{predict}?top_k=" + "1" * 5000, content=jpeg), "whole number"),  # int() refuses 4300+ digits
        (httpx.post(f"{predict}?top_k=%2B3", content=jpeg), "whole number"),  # "+3": int() would take it
    ]
    for response, words in cases:
        assert response.status_code == 400, (words, response.text)
        assert words in response.json()["error"], response.text
    assert httpx.post(f"{predict}?top_k=3", content=jpeg).status_code == 200
    assert 'status="500"' not in httpx.get(f"{server}/metrics").text


def _disconnect(port: int, path: str, content_type: str) -> None:
    """Headers and part of the body, then gone."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: 100000\r\n\r\n".encode() + b"\xff" * 1000)
        time.sleep(0.3)  # the server is reading the body


def test_a_client_that_disconnects_is_499_in_one_line_not_a_500_traceback(exported_bundle: Path) -> None:
    proc, url = start_server(exported_bundle)
    port = int(url.rsplit(":", 1)[1])
    try:
        _disconnect(port, "/predict", "image/jpeg")
        _disconnect(port, f"/v2/models/{exported_bundle.name}/infer", "application/json")
        deadline, metrics = time.monotonic() + 10, ""
        while 'endpoint="/v2/models/{name}/infer",status="499"' not in metrics:
            assert time.monotonic() < deadline, metrics
            time.sleep(0.1)
            metrics = httpx.get(f"{url}/metrics").text
        assert 'vl2lite_requests_total{endpoint="/predict",status="499"} 1' in metrics
        assert 'status="500"' not in metrics
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    out = proc.stdout.read()
    proc.stdout.close()
    assert "Traceback" not in out and "Exception in ASGI application" not in out, out
    closed = [line for line in out.splitlines() if "client closed the connection" in line]
    assert len(closed) == 2 and all("status 499" in line for line in closed), out


# --------------------------------------------------------------------------- bundles whose files disagree

def rewritten(bundle: Path, out: Path, files: dict[str, bytes], edit_manifest=None) -> Path:
    """A copy of ``bundle`` with ``files`` replaced and the manifest's sha256 of each updated, so the
    checksums match and only the contents disagree. The other files are links, not copies."""
    out.mkdir()
    for item in bundle.iterdir():
        if item.name not in (MANIFEST, *files):
            (out / item.name).symlink_to(item.resolve(), target_is_directory=item.is_dir())
    manifest = json.loads((bundle / MANIFEST).read_text())
    for name, data in files.items():
        (out / name).write_bytes(data)
        digest = sha256_file(out / name)
        manifest["files"][name] = digest
        for art in manifest["artifacts"]:
            if art["file"] == name:
                art.update(sha256=digest, size_bytes=len(data))
    if edit_manifest is not None:
        edit_manifest(manifest)
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _refused_by_the_clis(bundle: Path, image: Path, words: str, *options: str) -> None:
    """predict and serve both stop with one ``error:`` line naming the problem, exit status 2."""
    for module, args in (("runtime.predict", [str(bundle), str(image)]),
                         ("runtime.serve", [str(bundle), "--port", "1"])):  # never listens: the load fails first
        done = _cli(module, *args, *options)
        assert done.returncode == 2, (module, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr and words in done.stderr, (module, done.stderr)
        assert done.stderr.startswith("error: ") and "re-export the bundle" in done.stderr


def test_labels_that_are_not_utf8_are_one_clear_error(exported_bundle: Path, tmp_path: Path,
                                                      images: list[Path]) -> None:
    text = (exported_bundle / "labels.txt").read_bytes()
    bad = rewritten(exported_bundle, tmp_path / "latin1", {"labels.txt": text.replace(b"\n", b" \xe9\n", 1)})
    with pytest.raises(UserError, match=r"labels.txt is not UTF-8 text .*re-export the bundle"):
        load_bundle(bad)
    _refused_by_the_clis(bad, images[0], "labels.txt is not UTF-8")


def test_preprocessing_for_another_input_size_is_one_clear_error(exported_bundle: Path, tmp_path: Path,
                                                                 images: list[Path]) -> None:
    h, w = _input_size(exported_bundle)
    pre = json.loads((exported_bundle / "preprocessing.json").read_text())
    bigger = json.dumps({**pre, "input_size": [2 * h, 2 * w], "resize_size": 2 * pre["resize_size"]}).encode()
    bad = rewritten(exported_bundle, tmp_path / "pre", {"preprocessing.json": bigger})
    with pytest.raises(UserError, match=f"preprocessing.json makes {2 * h}x{2 * w} inputs but the manifest's model "
                                        f"input is {h}x{w}.*re-export the bundle"):
        load_bundle(bad)
    _refused_by_the_clis(bad, images[0], f"preprocessing.json makes {2 * h}x{2 * w} inputs")


def test_a_model_whose_input_is_not_the_preprocessed_size_is_refused_when_opened(exported_bundle: Path,
                                                                                 tmp_path: Path) -> None:
    """preprocessing.json and the manifest agree with each other, but not with the ONNX model."""
    h, w = _input_size(exported_bundle)
    pre = json.loads((exported_bundle / "preprocessing.json").read_text())
    bigger = json.dumps({**pre, "input_size": [2 * h, 2 * w]}).encode()

    def say_bigger(manifest: dict) -> None:
        manifest["input"]["shape"] = [-1, 3, 2 * h, 2 * w]

    bad = rewritten(exported_bundle, tmp_path / "both", {"preprocessing.json": bigger}, say_bigger)
    with pytest.raises(UserError, match=f"model.onnx takes Nx3x{h}x{w} inputs but preprocessing.json makes "
                                        f"Nx3x{2 * h}x{2 * w} ones.*re-export the bundle"):
        open_classifier(bad, "onnxruntime-cpu", "model.onnx")


@pytest.mark.parametrize("damage", ["text", "truncated"])
def test_a_model_file_that_is_not_a_model_is_one_clear_error(exported_bundle: Path, tmp_path: Path,
                                                             images: list[Path], damage: str) -> None:
    model = (exported_bundle / "model.onnx").read_bytes()
    data = b"this is not an ONNX model\n" if damage == "text" else model[:len(model) // 2]
    bad = rewritten(exported_bundle, tmp_path / damage, {"model.onnx": data})
    with pytest.raises(UserError, match="model.onnx is not an ONNX model .*re-export the bundle"):
        open_classifier(bad, "onnxruntime-cpu", "model.onnx")
    with pytest.raises(UserError, match="model.onnx is not an ONNX model"):
        load_bundle(bad)  # bench's load: every artifact checked
    load_bundle(bad, artifacts=False)  # predict and serve check only the file they open
    _refused_by_the_clis(bad, images[0], "model.onnx is not an ONNX model", "--artifact", "model.onnx")
    assert _cli("runtime.predict", str(bad), str(images[0]), "--artifact", "model.int8.onnx").returncode == 0


def test_the_protobuf_reader_sees_what_onnx_sees(exported_bundle: Path) -> None:
    for path in sorted(exported_bundle.glob("*.onnx")):
        dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        assert onnx_input_dims(path.read_bytes()) == [d.dim_value if d.HasField("dim_value") else None for d in dims]


# --------------------------------------------------------------------------- class names labels.txt cannot hold

@pytest.mark.parametrize("name, problem", [
    ("", "is empty"), ("  ", "is empty"), ("a\nb", "line break"), ("a\r", "line break"), ("a\u2028b", "line break"),
    ("caf\udce9", "not valid UTF-8"),
])
def test_names_that_cannot_be_a_line_of_labels_txt(name: str, problem: str) -> None:
    assert problem in label_problem(name)
    with pytest.raises(UserError, match=f"class 1 is named .*{problem}.*rename the class folder"):
        labels_text(["fine", name])


def test_labels_txt_is_written_as_before_and_reads_back(tmp_path: Path) -> None:
    names = ["Black footed Albatross", "Mésange", "a b", " leading space"]
    assert labels_text(names) == "".join(f"{n}\n" for n in names)  # what export has always written
    write_labels(tmp_path / "labels.txt", names)
    assert parse_labels((tmp_path / "labels.txt").read_bytes().decode("utf-8")) == names


def _folder_dataset(root: Path, folders: list[str | bytes]) -> Path:
    for folder in folders:
        path = os.path.join(os.fsencode(root), os.fsencode(folder))  # bytes: a name that is not UTF-8
        os.makedirs(path)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(os.fsdecode(os.path.join(path, b"%d.png" % i)))
    return root


@pytest.mark.parametrize("folder, problem", [("_", "is empty"), ("001.", "is empty"), ("a\nb", "line break"),
                                             (b"caf\xe9", "not valid UTF-8")])
def test_training_refuses_a_class_folder_whose_name_labels_txt_cannot_hold(tmp_path: Path, folder, problem) -> None:
    root = _folder_dataset(tmp_path / "data", ["001.sparrow", folder])
    spec = DatasetSpec(name="imagefolder", root=str(root), split_seed=0, val_fraction=0.2, label_names="")
    with pytest.raises(UserError, match=f"class folder .*{problem}.*rename the folder, or give data.label_names"):
        load_splits(spec)  # what distill reads before training


def test_label_names_are_the_fix_and_are_checked_too(tmp_path: Path) -> None:
    root = _folder_dataset(tmp_path / "data", ["001.sparrow", "_"])
    names = tmp_path / "names.tsv"
    names.write_text("001.sparrow\tsparrow\n_\tunknown bird\n")
    assert read_imagefolder(root, 0, str(names))[0] == ["sparrow", "unknown bird"]
    names.write_text("001.sparrow\tsparrow\n_\t \n")
    with pytest.raises(UserError, match=f"folder '_' \\(in data.label_names {names}\\).*is empty.*correct its line"):
        read_imagefolder(root, 0, str(names))


def test_cub_class_names_are_checked(tmp_path: Path) -> None:
    root = tmp_path / "cub"
    (root / "images" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "images" / "a" / "1.jpg")
    (root / "classes.txt").write_text("1 001.Albatross\n2 002._\n")
    (root / "images.txt").write_text("1 a/1.jpg\n")
    (root / "image_class_labels.txt").write_text("1 1\n")
    (root / "train_test_split.txt").write_text("1 1\n")
    with pytest.raises(UserError, match=r"class 2 of .*classes.txt gives the class name '', which is empty"):
        read_cub(root)


def test_a_bundle_loads_labels_with_windows_line_ends(exported_bundle: Path, tmp_path: Path) -> None:
    text = (exported_bundle / "labels.txt").read_bytes()
    crlf = rewritten(exported_bundle, tmp_path / "crlf", {"labels.txt": text.replace(b"\n", b"\r\n")})
    assert load_bundle(crlf, artifacts=False).labels == load_bundle(exported_bundle, artifacts=False).labels
