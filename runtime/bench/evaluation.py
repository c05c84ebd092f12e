"""``bench --data``: the labelled images prepared once for every worker, and the FP32 reference
the drops are measured against (runtime.bench.compare)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from formats.bench import BenchRow
from formats.bundle import Bundle
from formats.errors import UserError
from formats.progress import stage
from formats.preprocessing import load_input
from runtime.backends import SessionOptions, get_backend, require_available
from runtime.bench.compare import Measured, compare_with_manifest, fp32_artifact, reference_row
from runtime.bench.jobs import PreparedData
from runtime.bench.measure import top1_accuracy
from runtime.dataset import load_labelled_images
from runtime.model import decode_mode
from runtime.settings import BenchSettings


def prepare_data(bundle: Bundle, settings: BenchSettings, tmp: Path) -> PreparedData:
    """Decode and preprocess the --data images once, into .npy files the workers memory-map."""
    assert settings.data is not None
    items = load_labelled_images(settings.data, bundle.labels, settings.limit)
    h, w = bundle.preprocessing.input_size
    decode = decode_mode(bundle, settings.decode)
    x = np.lib.format.open_memmap(tmp / "x.npy", mode="w+", dtype=np.float32, shape=(len(items), 3, h, w))
    with stage(f"bench --data: decoding {settings.data}", len(items), "image") as step:
        for i, (path, _) in enumerate(items):
            x[i] = load_input(path, bundle.preprocessing, decode=decode)  # (3, H, W)
            step.advance()
    x.flush()
    np.save(tmp / "y.npy", np.array([y for _, y in items], dtype=np.int64))
    return PreparedData(str(tmp / "x.npy"), str(tmp / "y.npy"), len(items), decode)


def compare_on_data(bundle: Bundle, measured: list[Measured], data: PreparedData,
                    settings: BenchSettings) -> tuple[list[BenchRow], str | None, str]:
    """The rows with each artifact's drop on --data beside the manifest's, (what the FP32 reference was,
    e.g. "model.onnx on onnxruntime-cpu", "") or (None, why there is none)."""
    ref = fp32_reference(bundle, measured, data, settings)
    rows = compare_with_manifest(bundle, measured, np.load(data.y), None if isinstance(ref, str) else ref)
    return (rows, None, ref) if isinstance(ref, str) else (rows, ref[0], "")


def fp32_reference(bundle: Bundle, measured: list[Measured], data: PreparedData,
                   settings: BenchSettings) -> tuple[str, np.ndarray] | str:
    """(label, per-image FP32 predictions), or why there are none. The FP32 row measured here when
    there is one; else (``--artifact`` left it out) model.onnx is run once more on the CPU, in this
    process after every worker has finished, so no timed figure is coloured by it."""
    art = fp32_artifact(bundle)
    if art is None:
        return f"bundle {bundle.root} has no FP32 ONNX artifact"
    found = reference_row(measured, art.file)
    if found is not None:
        return found[0].label, np.asarray(found[1])
    try:
        with stage(f"measuring {art.file} on onnxruntime-cpu for the top-1 drop on --data", 1, "pass") as step:
            options = SessionOptions(threads=settings.threads, verbose=settings.verbose)
            session = require_available(get_backend("onnxruntime-cpu")).open(art, options)
            preds = top1_accuracy(session, data, bundle.max_batch, step.note).predictions
            step.advance()
    except (UserError, RuntimeError, OSError) as exc:  # said in the report: it must not lose the measured rows
        return f"no FP32 reference: {art.file} did not run on onnxruntime-cpu ({exc})"
    return f"{art.file} on onnxruntime-cpu", np.asarray(preds)
