"""File helpers every stage shares: atomic writes, sha256, strict JSON reading, timestamps."""
from __future__ import annotations

import errno
import hashlib
import json
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable

from formats.errors import UserError


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a temporary sibling of ``path``, then rename: never a half-written file.
    A folder that cannot be written, or a full disk, is one UserError naming the path and the free space."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
        tmp.replace(path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_write_failure(exc):
            raise write_error(path, exc) from None
        raise


DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})  # full disk, quota, read-only file system


def is_write_failure(exc: BaseException, disk_only: bool = False) -> bool:
    """An OSError (``disk_only``: only a full or read-only disk), or torch.save's RuntimeError when the
    disk fills ("PytorchStreamWriter failed writing")."""
    if isinstance(exc, OSError):
        return not disk_only or exc.errno in DISK_ERRNOS
    return isinstance(exc, RuntimeError) and "failed writing" in str(exc)


def write_error(path: Path, exc: BaseException) -> UserError:
    """One error for a write that failed: what, where, why, and the free space there."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else \
        re.sub(r"^\[enforce fail at [^\]]*\][\s.]*", "", str(exc).splitlines()[0])[:120]  # torch's C++ prefix
    return UserError(f"cannot write {path} ({reason}; {free_space(path)}): free some space or choose a writable "
                     f"folder")


def free_space(path: Path) -> str:
    """'1.2 GB free on <folder>' for the nearest existing folder of ``path``, or '' where it cannot be read."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return f"{shutil.disk_usage(folder).free / 1e9:.2f} GB free on {folder}"
    except OSError:
        return f"free space on {folder} unknown"


def writable_folder(folder: Path, what: str, need_bytes: int = 0) -> Path:
    """Create ``folder`` and check it takes a file and has ``need_bytes`` free: one UserError otherwise,
    before any work that would be lost (``what`` names the option, e.g. 'train.out_dir')."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise UserError(f"{what} {folder} cannot be written ({exc.strerror or exc}): choose a writable folder") from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise UserError(f"{what} {folder} has {free / 1e6:.0f} MB free, about {need_bytes / 1e6:.0f} MB are needed: "
                        f"free some space or choose another folder")
    return folder


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove the temporaries ``atomic_write`` left in ``folder`` when its process was killed
    (``.<name>.tmp``; call it only where no other process of this command is writing)."""
    stale = [p for p in Path(folder).glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json_object(path: Path, fix: str) -> dict[str, Any]:
    """A JSON object from ``path``; a missing, non-UTF-8, non-JSON or non-object file is one UserError
    naming the file and ``fix`` (what the user should do about it)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is missing: {fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}): {fix}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object, not {type(data).__name__}: {fix}")
    return data


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
