"""Read a bundle (docs/bundle.md): manifest, labels, preprocessing, artifacts, checksums.

The runtime reads only the bundle folder. Every file the manifest lists is checked against its
sha256 on load, so a truncated copy to a device fails here with a clear message instead of as
garbage predictions later.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import RuntimeUserError
from runtime.preprocess import PreprocessSpec

SCHEMA = "vl2lite-bundle"
SCHEMA_VERSION = 1
REBUILD = "rebuild it with python -m export <checkpoint> --out <bundle>"


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
    manifest: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def artifact(self, file: str) -> Artifact:
        for art in self.artifacts:
            if art.file == file:
                return art
        names = ", ".join(a.file for a in self.artifacts)
        raise RuntimeUserError(f"bundle {self.root} has no artifact {file!r}: choose one of {names}")


def load_bundle(root: str | Path, verify: bool = True) -> Bundle:
    """Load and check a bundle folder; ``verify`` compares every listed file with its sha256."""
    root = Path(root)
    manifest = _read_manifest(root)
    fields = _manifest_fields(root, manifest)
    if verify:
        verify_checksums(root, fields["checksums"])
    labels = _read_labels(fields["labels"])
    pre = PreprocessSpec.from_dict(_read_json(fields["preprocessing"]))
    if len(labels) != fields["num_classes"]:
        raise RuntimeUserError(f"bundle {root}: labels.txt has {len(labels)} names but the manifest says "
                               f"{fields['num_classes']} classes; {REBUILD}")
    return Bundle(root=root, name=fields["name"], arch=fields["arch"], labels=tuple(labels), preprocessing=pre,
                  input_name=fields["input_name"], output_name=fields["output_name"], max_batch=fields["max_batch"],
                  artifacts=fields["artifacts"], manifest=manifest)


def _manifest_fields(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's fields, typed and checked; a missing or mistyped one is one clear error."""
    try:
        fields = {"name": str(manifest["name"]), "arch": str(manifest.get("arch", "unknown")),
                  "num_classes": int(manifest["num_classes"]),
                  "input_name": str(manifest["input"]["name"]), "output_name": str(manifest["output"]["name"]),
                  "max_batch": int(manifest.get("max_batch", 64)),
                  "labels": inside(root, manifest.get("labels", "labels.txt")),
                  "preprocessing": inside(root, manifest.get("preprocessing", "preprocessing.json")),
                  "artifacts": tuple(_artifact(root, a) for a in manifest["artifacts"]),
                  "checksums": _checksums(root, manifest)}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a field missing or of the wrong type
        raise RuntimeUserError(f"{root / 'manifest.json'} is malformed ({type(exc).__name__}: {exc}): "
                               f"{REBUILD}") from None
    if fields["max_batch"] < 1:
        raise RuntimeUserError(f"{root / 'manifest.json'} has max_batch {fields['max_batch']}; it must be at "
                               f"least 1: {REBUILD}")
    return fields


def inside(root: Path, name: str) -> Path:
    """``root / name`` for a relative path that stays inside the bundle; anything else is refused."""
    if not isinstance(name, str) or not name:
        raise RuntimeUserError(f"{root / 'manifest.json'} names a file {name!r}: {REBUILD}")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:  # lexical: a bundle may hold links the user made
        raise RuntimeUserError(f"{root / 'manifest.json'} names {name!r}, a path outside the bundle: a bundle "
                               f"only refers to its own files; {REBUILD}")
    return root / rel


def _read_manifest(root: Path) -> dict[str, Any]:
    if not root.is_dir():
        raise RuntimeUserError(f"bundle folder {root} not found: pass the folder written by python -m export")
    path = root / "manifest.json"
    if not path.is_file():
        raise RuntimeUserError(f"{root} is not a complete bundle (no manifest.json): run python -m export "
                               f"<checkpoint> --out {root} again; an interrupted export leaves no manifest")
    manifest = _read_json(path)
    if manifest.get("schema") != SCHEMA:
        raise RuntimeUserError(f"{path} is not a bundle manifest (schema {SCHEMA!r}): pass a bundle folder")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise RuntimeUserError(f"{path} has schema version {manifest.get('schema_version')}, this runtime "
                               f"reads {SCHEMA_VERSION}: install the matching runtime or {REBUILD}")
    missing = [k for k in ("name", "num_classes", "input", "output", "artifacts") if k not in manifest]
    if missing:
        raise RuntimeUserError(f"{path} lacks {', '.join(missing)}: {REBUILD}")
    return manifest


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RuntimeUserError(f"bundle file {path} is missing: {REBUILD}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RuntimeUserError(f"bundle file {path} is not valid JSON ({exc}): {REBUILD}") from None
    if not isinstance(data, dict):
        raise RuntimeUserError(f"bundle file {path} must hold a JSON object: {REBUILD}")
    return data


def _read_labels(path: Path) -> list[str]:
    if not path.is_file():
        raise RuntimeUserError(f"bundle file {path} is missing: {REBUILD}")
    return [line.rstrip("\r") for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def _artifact(root: Path, entry: dict[str, Any]) -> Artifact:
    sidecar = entry.get("sidecar")
    return Artifact(file=entry["file"], format=entry["format"], precision=entry.get("precision", "fp32"),
                    target=entry.get("target", "any"), path=inside(root, entry["file"]),
                    size_bytes=int(entry.get("size_bytes", 0)),
                    top1=entry.get("top1"), sidecar=inside(root, sidecar) if sidecar else None)


def _checksums(root: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """Relative path -> sha256 for every file in ``files`` and every artifact, each inside the bundle."""
    expected = {str(k): str(v) for k, v in dict(manifest.get("files", {})).items()}
    expected.update({a["file"]: str(a["sha256"]) for a in manifest["artifacts"] if "sha256" in a})
    for name in expected:
        inside(root, name)
    return expected


def verify_checksums(root: Path, checksums: dict[str, str]) -> None:
    """Every listed file must exist and match its sha256."""
    for name, digest in checksums.items():
        path = root / name
        if not path.is_file():
            raise RuntimeUserError(f"bundle file {name} is missing from {root}: rebuild with python -m export")
        if sha256_file(path) != digest:
            raise RuntimeUserError(f"bundle file {name} is corrupt (sha256 mismatch): rebuild with "
                                   f"python -m export, or copy the bundle to the device again")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
