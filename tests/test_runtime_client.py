"""runtime.client against a real server on loopback: /predict and KServe v2 agree, infer's logits are
the local onnxruntime logits of the same artifact, errors carry the server's text."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from formats.errors import UserError
from runtime.client import Client, ServerError
from runtime.model import open_classifier
from tests.runtime_helpers import REPO, free_port, make_images, start_server


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return make_images(tmp_path_factory.mktemp("client-images"))


@pytest.fixture(scope="module")
def served(exported_bundle: Path):
    """A server whose batches hold 2 rows, so infer of more images is split in several requests."""
    proc, url = start_server(exported_bundle, "--max-batch", "2")
    yield url, proc
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def test_predict_and_infer_agree_and_infer_is_the_local_model(served, exported_bundle: Path,
                                                              images: list[Path]) -> None:
    url, _ = served
    client = Client(url, bundle=exported_bundle)
    answer = client.predict(images[0], top_k=3)
    assert answer.model == "demo" and len(answer.predictions) == 3
    logits = client.infer(images[:5])  # 5 images, 2 rows a request: three requests
    assert logits.shape == (5, 10) and logits.dtype == np.float32
    assert int(logits[0].argmax()) == answer.predictions[0].index  # predict and infer: one top-1
    (top,) = client.classify(images[:1], top_k=3)
    assert [p.index for p in top] == [p.index for p in answer.predictions]
    np.testing.assert_allclose([p.probability for p in top], [p.probability for p in answer.predictions], atol=1e-6)
    local = open_classifier(exported_bundle, "onnxruntime-cpu", answer.artifact)  # the artifact the server runs
    np.testing.assert_allclose(logits, local.logits(client.preprocess(images[:5])), atol=1e-4)
    np.testing.assert_allclose(logits, local.logits(np.stack([local.load(p) for p in images[:5]])), atol=1e-4)
    decoded = Image.open(images[1])
    assert client.predict(decoded).predictions[0].index == int(client.infer([decoded])[0].argmax())


def test_errors_carry_the_server_s_text_or_name_the_address(served, exported_bundle: Path,
                                                            images: list[Path]) -> None:
    url, _ = served
    client = Client(url, bundle=exported_bundle)
    with pytest.raises(ServerError, match="server answered 400: request body is not an image") as bad:
        client.predict(b"not an image")
    assert bad.value.status == 400
    with pytest.raises(ServerError, match="server answered 400: input shape"):
        client.infer(np.zeros((1, 3, 8, 8), np.float32))  # preprocessed to the wrong size
    with pytest.raises(UserError, match="need the bundle folder"):
        Client(url).infer(images[:1])
    port = free_port()  # nothing listens there
    with pytest.raises(UserError, match=f"cannot reach the server at http://127.0.0.1:{port} .*refused"):
        Client(f"http://127.0.0.1:{port}").predict(images[0])


def test_serve_said_which_artifact_at_start(served) -> None:
    url, proc = served
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=30)[0]
    assert any(line.startswith("artifact: model.") for line in output.splitlines()), output  # runtime.choice


def test_the_client_imports_no_torch() -> None:
    code = "import sys, runtime.client; assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
