"""Writing an output folder (a bundle, a QAT folder): staging and the atomic publish.

The folder is filled as a temporary sibling (``staging``) and renamed into place once complete
(``publish``), its record (``manifest.json``, ``qat.json``) written last; ``--overwrite`` replaces
only a folder of the same kind, never one holding the source checkpoint.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from formats.bundle import MANIFEST
from formats.errors import UserError
from formats.files import is_write_failure, write_error, write_json
from formats.manifest import SCHEMA
from formats.qat import QAT_FILE, QAT_SCHEMA


@dataclass(frozen=True)
class OutputKind:
    """A kind of output folder: its record file, written last, and that record's schema."""

    noun: str  # "bundle", "QAT folder"
    record: str  # the file written last
    schema: str

    def holds(self, folder: Path) -> bool:
        """Whether ``folder`` is one of these (its record names the schema)."""
        return _schema(folder / self.record) == self.schema


BUNDLE = OutputKind("bundle", MANIFEST, SCHEMA)
QAT_FOLDER = OutputKind("QAT folder", QAT_FILE, QAT_SCHEMA)


def check_target(out: Path, overwrite: bool, keep: Path | None, kind: OutputKind) -> None:
    """``out`` must be new, or with ``overwrite`` an empty folder or one of ``kind`` not holding ``keep``."""
    if not out.exists():
        return
    if not overwrite:
        raise UserError(f"output folder {out} already exists: pass --overwrite to replace it, or choose another --out")
    if not out.is_dir():
        raise UserError(f"output path {out} exists and is not a folder: choose another --out")
    if not any(out.iterdir()):
        return
    if not kind.holds(out):
        raise UserError(f"--overwrite replaces {kind.noun}s only, and {out} is not one (no {kind.record} of schema "
                        f"{kind.schema}): choose another --out, or remove the folder yourself")
    if keep is not None and keep.resolve().is_relative_to(out.resolve()):
        raise UserError(f"the checkpoint {keep} lies inside {out}, which --overwrite would delete: "
                        f"move the checkpoint out or choose another --out")


def _schema(manifest: Path) -> str | None:
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    return data.get("schema") if isinstance(data, dict) else None


def _temp_prefix(out: Path, kind: str) -> str:
    """``.<bundle>.<kind>-<host>-<pid>-``: whose temporary folder it is, so a later run can tell."""
    return f".{out.name}.{kind}-{socket.gethostname()}-{os.getpid()}-"


def remove_stale(out: Path) -> list[Path]:
    """Delete the temporary folders of earlier exports to ``out`` that were killed (same host, process
    gone): a ``.partial-`` staging folder, or an ``.old-`` one left between the two renames of a
    publish. A live process's folders, other hosts' and anything not named so are never touched."""
    removed = []
    host = socket.gethostname()
    for kind in ("partial", "old"):
        for path in out.parent.glob(f".{glob.escape(out.name)}.{kind}-{glob.escape(host)}-*-*"):
            pid = path.name[len(f".{out.name}.{kind}-{host}-"):].split("-", 1)[0]
            if path.is_dir() and pid.isdecimal() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


@contextmanager
def staging(out: Path, overwrite: bool, keep: Path | None = None, kind: OutputKind = BUNDLE) -> Iterator[Path]:
    """Yield an empty sibling folder; on success the caller publishes it, on failure it is deleted.

    ``keep`` (the source checkpoint) must not lie inside an ``out`` that would be replaced.
    """
    check_target(out, overwrite, keep, kind)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(out, "partial"), dir=out.parent))
    except OSError as exc:
        raise UserError(f"cannot write the {kind.noun} to {out} ({exc.strerror or exc}): choose a writable --out") from None
    try:
        yield tmp
    except BaseException as exc:
        if is_write_failure(exc, disk_only=True):  # a full or read-only disk: one line, the staging folder removed
            raise write_error(out, exc) from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after publish renamed it away


def publish(tmp: Path, out: Path, record: dict[str, Any], overwrite: bool = False, keep: Path | None = None,
            kind: OutputKind = BUNDLE) -> None:
    """Write the folder's record (``kind.record``) last, then move the folder into place (replacing
    ``out`` if allowed).

    ``out`` is checked again here: the export took minutes, and something may have appeared there.
    """
    check_target(out, overwrite, keep, kind)
    write_json(tmp / kind.record, record)  # temporary file, then rename
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a bundle is an ordinary shared folder
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=_temp_prefix(out, "old"), dir=out.parent))
        os.replace(out, old / out.name)  # both renames stay on one filesystem: each is atomic
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
