"""Each stage for one student (or, for the benchmark, every bundle), called as a library function.

A stage that fails gives a ``formats.sweep.Failure`` row (its exception's type, the exit status its
own command gives for it, its one line) and the sweep goes on with the other students. Every
result is read through ``formats``: the bundle's manifest (``formats.manifest``), the QAT record
(``formats.qat``), the benchmark's report (``formats.bench`` / ``formats.frontier``). Each call
also records the command line that does the same work (``python -m export ...``), to redo it by
hand or on a device.
"""
from __future__ import annotations

import dataclasses
import shlex
import time
import traceback
from pathlib import Path
from typing import Callable, TypeVar

from export import BudgetError, ExportOptions, QatSettings, export_bundle, quantization_aware_training
from formats.bundle import MANIFEST
from formats.errors import UserError, one_line
from formats.files import read_json_object, sha256_file
from formats.manifest import Manifest
from formats.qat import read_qat_record
from formats.sweep import ArtifactFigures, BenchRun, Failure, StageRun, made_by, read_made_by, write_made_by
from runtime.bench import run_bench, run_bench_many
from runtime.settings import BenchSettings

T = TypeVar("T")


def attempt(work: Callable[[], T]) -> T | Failure:
    """``work()``, or the Failure that says why it gave nothing. An accuracy budget miss is told
    apart by its type (export's BudgetError), never by its message."""
    try:
        return work()
    except BudgetError as exc:
        return Failure("BudgetError", exc.exit_status, one_line(exc))
    except UserError as exc:
        return Failure(type(exc).__name__, exc.exit_status, one_line(exc))
    except Exception as exc:  # a crash in one student's stage is its row (traceback above it); the others go on
        traceback.print_exc()
        return Failure(type(exc).__name__, 1, f"{type(exc).__name__}: {exc}"[:500])


def export_student(checkpoint: Path, bundle: Path, options: ExportOptions, args: str) -> StageRun:
    """``export_bundle`` for one student; a bundle of this very checkpoint and these export options
    (``args``, recorded beside it in ``<bundle>.made-by.json`` once it is complete) is reused."""
    command = _command("export", checkpoint, bundle, args)
    record, wanted = bundle.with_name(f"{bundle.name}.made-by.json"), made_by(sha256_file(checkpoint), args)
    reused = read_made_by(record) == wanted and (bundle / MANIFEST).is_file()
    start = time.perf_counter()
    done = attempt(lambda: _figures(bundle if reused else export_bundle(checkpoint, bundle, options)))
    if isinstance(done, Failure):
        return StageRun(command, None, 0.0, False, done)
    if not reused:
        write_made_by(record, wanted)
    return StageRun(command, str(bundle), 0.0 if reused else time.perf_counter() - start, reused, artifacts=done)


def _figures(bundle: Path) -> tuple[ArtifactFigures, ...]:
    """The bundle's artifacts as its manifest records them (read strictly by formats.manifest)."""
    path = bundle / MANIFEST
    fix = f"export the bundle again (python -m export <checkpoint> --out {bundle})"
    manifest = Manifest.from_dict(read_json_object(path, fix), str(path))
    return tuple(ArtifactFigures(a.file, a.precision, a.top1, a.within_budget) for a in manifest.artifacts)


def train_qat(checkpoint: Path, settings: QatSettings, args: str) -> StageRun:
    """``quantization_aware_training`` into ``<run>/qat``; a folder of this very checkpoint and these
    options (recorded in ``<run>/qat.made-by.json``) is reused."""
    folder, record = checkpoint.parent / "qat", checkpoint.parent / "qat.made-by.json"
    command, wanted = _command("export.qat", checkpoint, folder, args), made_by(sha256_file(checkpoint), args)
    if read_made_by(record) == wanted and _qat_of(folder, wanted.checkpoint_sha256):
        return StageRun(command, str(folder), 0.0, True)
    start = time.perf_counter()
    done = attempt(lambda: quantization_aware_training(checkpoint, dataclasses.replace(settings, out=folder)))
    if isinstance(done, Failure):
        return StageRun(command, None, 0.0, False, done)
    write_made_by(record, wanted)
    return StageRun(command, str(folder), time.perf_counter() - start, False)


def _qat_of(folder: Path, checkpoint_sha256: str) -> bool:
    """Whether ``folder`` holds a complete QAT record (formats.qat) of this checkpoint."""
    try:
        return read_qat_record(folder, "").source_checkpoint.sha256 == checkpoint_sha256
    except UserError:
        return False


def _command(module: str, checkpoint: Path, out: Path, args: str) -> str:
    return shlex.join(["python", "-m", module, str(checkpoint), "--out", str(out), "--overwrite", *shlex.split(args)])


def bench_bundles(bundles: list[Path], out: Path, settings: BenchSettings, args: str) -> BenchRun:
    """runtime's benchmark of every bundle at once (one bundle: its bench.json; several: the frontier)
    into ``out``; its output streams, as ``python -m runtime.bench`` would print it."""
    one = len(bundles) == 1
    out = out / bundles[0].name if one else out
    budget = [] if settings.budget_ms is None else ["--budget-ms", f"{settings.budget_ms:g}"]
    command = shlex.join(["python", "-m", "runtime.bench", *map(str, bundles), "--out", str(out), *shlex.split(args),
                          *budget])
    settings = dataclasses.replace(settings, out=out)
    done = attempt(lambda: run_bench(bundles[0], settings) if one else run_bench_many(bundles, settings))
    if isinstance(done, Failure):
        return BenchRun(command, None, done)
    # done: the report the benchmark wrote, as its formats record (formats.bench / formats.frontier)
    return BenchRun(command, str(out / ("bench.json" if one else "frontier.json")), pick=done.budget)
