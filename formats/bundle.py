"""The bundle (docs/bundle.md): schema, manifest, labels, preprocessing, artifacts, checksums.

export writes it; the runtime reads only the bundle folder, through ``load_bundle``. Every file the manifest lists is checked against its
sha256 on load, so a truncated copy to a device fails here with a clear message instead of as
garbage predictions later.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from formats.errors import UserError
from formats.files import read_json_object, sha256_file, write_text
from formats.labels import label_problem
from formats.onnx_header import NotAModel, onnx_input_dims
from formats.manifest import ArtifactEntry, Manifest
from formats.preprocessing import PreprocessSpec

MANIFEST = "manifest.json"
REBUILD = "rebuild it with python -m export <checkpoint> --out <bundle>"
REEXPORT = "re-export the bundle (python -m export <checkpoint> --out <bundle>)"


@dataclass(frozen=True)
class Artifact:
    """One model file of the bundle, as the manifest describes it."""

    file: str
    format: str  # "onnx" or "tensorrt"
    precision: str  # "fp32", "fp16", "int8"
    target: str  # "any", "onnxruntime-cpu", "gpu", "tensorrt"
    path: Path
    size_bytes: int
    top1: float | None = None
    sidecar: Path | None = None  # TensorRT engines: the build environment, checked before loading
    within_budget: bool | None = None  # the accuracy verdict (None: a bundle written before verdicts)
    sha256: str = ""  # the manifest's checksum of ``file``
    top1_drop: float | None = None  # points below the PyTorch reference on the manifest's reference split
    top1_drop_ci95: float | None = None  # half-width of top1_drop's paired 95% interval (None: older bundles)
    # where top1 and top1_drop were measured (formats.isa); None: a bundle written before provenance.
    # Left out of the hash: a dict is unhashable, and file + sha256 already identify the artifact.
    measured_on: dict[str, str] | None = field(default=None, hash=False)


@dataclass(frozen=True)
class Bundle:
    root: Path
    name: str
    arch: str
    labels: tuple[str, ...]
    preprocessing: PreprocessSpec
    input_name: str
    output_name: str
    max_batch: int
    artifacts: tuple[Artifact, ...]
    manifest: Manifest  # the whole manifest, typed (formats.manifest)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def artifact(self, file: str) -> Artifact:
        for art in self.artifacts:
            if art.file == file:
                return art
        names = ", ".join(a.file for a in self.artifacts)
        raise UserError(f"bundle {self.root} has no artifact {file!r}: choose one of {names}")


def load_bundle(root: str | Path, verify: bool = True, artifacts: bool = True) -> Bundle:
    """Load and check a bundle folder; ``verify`` compares every listed file with its sha256, or,
    with ``artifacts`` false, only labels and preprocessing (``verify_artifact`` then checks the
    model file that is used: the others may be large and are not read)."""
    root = Path(root)
    raw = _read_manifest(root)
    m = Manifest.from_dict(raw, str(root / MANIFEST))
    checksums = _checksums(root, m)
    if verify:
        verify_checksums(root, checksums if artifacts else {k: checksums.get(k, "") for k in (m.labels, m.preprocessing)})
    labels = _read_labels(inside(root, m.labels))
    pre = PreprocessSpec.from_dict(_read_json(inside(root, m.preprocessing)))
    if len(labels) != m.num_classes:
        raise UserError(f"bundle {root}: labels.txt has {len(labels)} names but the manifest says "
                        f"{m.num_classes} classes; {REBUILD}")
    if m.max_batch < 1:
        raise UserError(f"{root / MANIFEST} has max_batch {m.max_batch}; it must be at least 1: {REBUILD}")
    names = [m.input.name, m.output.name]
    if not all(isinstance(n, str) and n for n in names):
        raise UserError(f"{root / MANIFEST}: input and output need a name: {REBUILD}")
    _check_shapes(root, m, pre)
    bundle = Bundle(root=root, name=m.name, arch=m.arch, labels=tuple(labels), preprocessing=pre,
                    input_name=names[0], output_name=names[1], max_batch=m.max_batch,
                    artifacts=tuple(_artifact(root, a) for a in m.artifacts), manifest=m)
    if verify and artifacts:  # every model file was just read for its checksum: check what it holds too
        for art in bundle.artifacts:
            check_model_input(bundle, art)
    return bundle


def _check_shapes(root: Path, m: Manifest, pre: PreprocessSpec) -> None:
    """The manifest's tensor shapes agree with preprocessing.json and labels.txt (whose files hash
    right, but may have been written from another model)."""
    shape, out = list(m.input.shape), list(m.output.shape)
    if not (_ints(shape, 4) and shape[1] == 3) or not _ints(out, 2):
        raise UserError(f"{root / MANIFEST}: input.shape {shape!r} must be [-1, 3, H, W] and output.shape "
                        f"{out!r} [-1, C]: {REEXPORT}")
    if tuple(shape[2:]) != pre.input_size:
        raise UserError(f"bundle {root}: preprocessing.json makes {_hw(pre.input_size)} inputs but the manifest's "
                        f"model input is {_hw(shape[2:])} (input.shape {shape}): the files disagree; {REEXPORT}")
    if out[1] != m.num_classes:
        raise UserError(f"bundle {root}: the manifest's output.shape {out} does not give its {m.num_classes} "
                        f"classes: {REEXPORT}")


def _ints(value: Any, n: int) -> bool:
    return isinstance(value, list) and len(value) == n and all(type(v) is int for v in value)


def _hw(size: Any) -> str:
    return "x".join(str(v) for v in size)


def inside(root: Path, name: str) -> Path:
    """``root / name`` for a relative path that stays inside the bundle; anything else is refused."""
    if not isinstance(name, str) or not name:
        raise UserError(f"{root / 'manifest.json'} names a file {name!r}: {REBUILD}")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:  # lexical: a bundle may hold links the user made
        raise UserError(f"{root / 'manifest.json'} names {name!r}, a path outside the bundle: a bundle "
                               f"only refers to its own files; {REBUILD}")
    return root / rel


def _read_manifest(root: Path) -> dict[str, Any]:
    if not root.is_dir():
        raise UserError(f"bundle folder {root} not found: pass the folder written by python -m export")
    path = root / MANIFEST
    if not path.is_file():
        raise UserError(f"{root} is not a complete bundle (no manifest.json): run python -m export "
                        f"<checkpoint> --out {root} again; an interrupted export leaves no manifest")
    return _read_json(path)


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, REBUILD)


def _read_labels(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"bundle file {path} is missing: {REBUILD}")
    try:
        return parse_labels(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"bundle file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}) although its "
                        f"sha256 matches the manifest: the bundle was written wrong; {REEXPORT}") from None


def parse_labels(text: str) -> list[str]:
    """labels.txt -> class names: one per line, blank lines skipped, Windows line ends tolerated."""
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def labels_text(names: Sequence[str]) -> str:
    """Class names -> labels.txt, refusing a name that would not read back as itself (``parse_labels``)."""
    for index, name in enumerate(names):
        problem = label_problem(name)
        if problem is not None:
            raise UserError(f"class {index} is named {name!r}, which {problem}: labels.txt holds one name per line, "
                            f"so the bundle could not be read back; rename the class folder (or give "
                            f"data.label_names) and train again")
    text = "".join(f"{name}\n" for name in names)
    assert parse_labels(text) == list(names), "label_problem let through a name labels.txt cannot hold"
    return text


def write_labels(path: Path, names: Sequence[str]) -> None:
    """Write a bundle's labels.txt (UTF-8, one name per line); every name must read back as itself."""
    write_text(path, labels_text(names))


def _artifact(root: Path, entry: ArtifactEntry) -> Artifact:
    return Artifact(file=entry.file, format=entry.format, precision=entry.precision, target=entry.target,
                    path=inside(root, entry.file), size_bytes=entry.size_bytes, top1=entry.top1,
                    sidecar=inside(root, entry.sidecar) if entry.sidecar else None,
                    within_budget=entry.within_budget, sha256=entry.sha256,
                    top1_drop=entry.top1_drop, top1_drop_ci95=entry.top1_drop_ci95, measured_on=entry.measured_on)


def _checksums(root: Path, m: Manifest) -> dict[str, str]:
    """Relative path -> sha256 for every file in ``files`` and every artifact, each inside the bundle."""
    expected = dict(m.files)
    expected.update({a.file: a.sha256 for a in m.artifacts})
    for name in expected:
        inside(root, name)
    return expected


def verify_checksums(root: Path, checksums: dict[str, str]) -> None:
    """Every listed file must exist and match its sha256."""
    for name, digest in checksums.items():
        path = root / name
        if not path.is_file():
            raise UserError(f"bundle file {name} is missing from {root}: rebuild with python -m export")
        if sha256_file(path) != digest:
            raise UserError(f"bundle file {name} is corrupt (sha256 mismatch): rebuild with "
                                   f"python -m export, or copy the bundle to the device again")


def verify_artifact(bundle: Bundle, art: Artifact) -> None:
    """The model file about to be loaded and its engine sidecar, against their sha256."""
    files = bundle.manifest.files
    checksums = {art.file: art.sha256}
    if art.sidecar is not None:
        name = art.sidecar.relative_to(bundle.root).as_posix()
        checksums[name] = files.get(name, "")
    verify_checksums(bundle.root, checksums)
    check_model_input(bundle, art)


# --------------------------------------------------------------------------- what a model file holds

def check_model_input(bundle: Bundle, art: Artifact) -> None:
    """An ONNX artifact must be an ONNX model taking the input preprocessing.json makes (where its
    size is fixed). A matching sha256 proves only that the file is the one export listed."""
    if art.format != "onnx":
        return  # a TensorRT engine is checked by TensorRT, against its sidecar (runtime.backends.tensorrt)
    try:
        dims = onnx_input_dims(art.path.read_bytes())
    except NotAModel as exc:
        raise UserError(f"bundle file {art.file} is not an ONNX model ({exc}) although its sha256 matches the "
                        f"manifest: the bundle was written wrong; {REEXPORT}") from None
    expected = (3, *bundle.preprocessing.input_size)
    if len(dims) != 4 or any(d is not None and d != e for d, e in zip(dims[1:], expected)):
        model = "x".join("N" if d is None else str(d) for d in dims)
        raise UserError(f"bundle file {art.file} takes {model} inputs but preprocessing.json makes Nx{_hw(expected)} "
                        f"ones: the files disagree; {REEXPORT}")


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative POSIX paths), the manifest excepted."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in files}


def verify_bundle(folder: Path) -> dict[str, Any]:
    """Strict check (export's own): the files are exactly those the manifest lists, each unchanged."""
    manifest = _read_manifest(folder)
    Manifest.from_dict(manifest, str(folder / MANIFEST))
    actual, listed = file_hashes(folder), manifest.get("files", {})
    if actual != listed:
        changed = sorted(set(actual.items()) ^ set(listed.items()))
        raise UserError(f"bundle {folder} does not match its manifest (first difference: {changed[0][0]})")
    return manifest
