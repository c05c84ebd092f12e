"""The benchmark's orchestration: which jobs to run, one fresh worker each, the report and its
files (bench.json, frontier.json: formats.bench, formats.frontier), the printed tables."""
from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

from formats.bench import SCHEMA, SCHEMA_VERSION, BenchBundle, BenchData, BenchReport, BenchRow, ModelInput, write_bench
from formats.bundle import Artifact, Bundle, load_bundle
from formats.errors import UserError
from formats.files import utc_now, writable_folder
from formats.frontier import SCHEMA as FRONTIER_SCHEMA
from formats.frontier import SCHEMA_VERSION as FRONTIER_VERSION
from formats.frontier import Frontier, write_frontier
from runtime.backends import get_backend, list_backends, require_available
from runtime.bench.compare import Measured, format_comparison
from runtime.bench.evaluation import compare_on_data, prepare_data
from runtime.bench.frontier import MeasuredBundle, format_frontier, frontier_rows, pick
from runtime.bench.jobs import Job
from runtime.bench.plots import plot_frontier
from runtime.bench.report import format_table, write_plots
from runtime.bench.worker import measure_in_worker
from runtime.device import device_info, software_versions
from runtime.settings import BenchSettings

# Backends tried when none is named; onnxruntime-tensorrt is left to an explicit --backend
# because it builds TensorRT engines for minutes on first use.
DEFAULT_BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda", "tensorrt")


def run_bench(bundle_dir: str | Path, settings: BenchSettings = BenchSettings()) -> BenchReport:
    """Measure, print the table, write bench.json and the plots; return the report."""
    bundle = load_bundle(bundle_dir)
    jobs, notes = plan(bundle, settings)
    out = Path(settings.out or Path("runs") / "bench" / bundle.name)
    writable_folder(out, "--out")  # before minutes of measuring
    rows, data = measure_all(bundle, jobs, settings)
    results = tuple(sorted(notes + rows, key=lambda r: r.status != "ok"))
    report = BenchReport(SCHEMA, SCHEMA_VERSION, utc_now(), _bundle_record(bundle), device_info(), software_versions(),
                         settings.record(), data, results, None)
    if settings.budget_ms is not None:
        rows_here = frontier_rows([_measured(bundle, report)])
        report = dataclasses.replace(report, budget=pick(rows_here, settings.budget_ms))
    write_bench(out / "bench.json", report)
    plots = write_plots(report.results, out) if settings.plots else []
    _print(report, [out / "bench.json", *plots])
    return report


def measure_all(bundle: Bundle, jobs: list[Job], settings: BenchSettings) -> tuple[list[BenchRow], BenchData | None]:
    """Every job in its own worker; with --data, the images prepared once and each drop set beside the manifest's."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        prepared = prepare_data(bundle, settings, Path(tmp)) if settings.data else None
        measured: list[Measured] = [measure_in_worker(bundle, job, settings, prepared, Path(tmp)) for job in jobs]
        if prepared is None:
            return [row for row, _ in measured], None
        # inside the folder: the FP32 reference may still need the prepared images
        rows, reference, no_reference = compare_on_data(bundle, measured, prepared, settings)
        return rows, BenchData(str(settings.data), prepared.images, prepared.decode, reference, no_reference or None)


def _print(report: BenchReport, written: list[Path | str]) -> None:
    print(format_table(report.results))
    if report.data:
        print(f"\n{format_comparison(report.results, report.data.fp32_reference, report.data.no_reference or '')}")
    if report.budget:
        print(f"\n{report.budget.message}")
    print(f"\nwrote {', '.join(map(str, written))}")


def _bundle_record(bundle: Bundle) -> BenchBundle:
    h, w = bundle.preprocessing.input_size
    return BenchBundle(str(bundle.root), bundle.name, bundle.arch, ModelInput(bundle.input_name, (-1, 3, h, w), "float32"),
                       {a.file: a.sha256 for a in bundle.artifacts})


def _measured(bundle: Bundle, report: BenchReport, name: str | None = None) -> MeasuredBundle:
    """The report with the manifest's test top-1 (the frontier's accuracy without --data) and the
    artifacts export marked over the accuracy budget (written with --best-effort)."""
    return MeasuredBundle(report, name or bundle.name, {a.file: a.top1 for a in bundle.artifacts if a.top1 is not None},
                          frozenset(a.file for a in bundle.artifacts if a.within_budget is False))


def run_bench_many(bundle_dirs: list[Path], settings: BenchSettings = BenchSettings()) -> Frontier:
    """Measure every bundle (each into ``<out>/<name>/``), then the frontier table, plot and pick."""
    bundles = [load_bundle(d) for d in bundle_dirs]  # every bundle readable before minutes of measuring
    if settings.artifacts:
        raise UserError("--artifact names files of one bundle: leave it out when benchmarking several bundles")
    if len({b.labels for b in bundles}) > 1:
        print("warning: these bundles classify different label sets, so their top-1 figures come from different "
              "test sets and the frontier compares unlike things: compare students of one task", file=sys.stderr)
    base = Path(settings.out or Path("runs") / "bench" / "frontier")
    names = _unique([b.name for b in bundles])
    measured = []
    for bundle, name in zip(bundles, names):
        print(f"\n== {name} ({bundle.arch}): {bundle.root}")
        report = run_bench(bundle.root, dataclasses.replace(settings, out=base / name, budget_ms=None))
        measured.append(_measured(bundle, report, name))
    rows = frontier_rows(measured)
    summary = Frontier(FRONTIER_SCHEMA, FRONTIER_VERSION, utc_now(), device_info(), settings.record(),
                       {n: str(b.root) for n, b in zip(names, bundles)}, tuple(rows),
                       pick(rows, settings.budget_ms) if settings.budget_ms is not None else None)
    write_frontier(base / "frontier.json", summary)
    plot = plot_frontier(rows, base / "frontier.png", settings.budget_ms) if settings.plots and _has_matplotlib() else None
    print("\n" + format_frontier(rows))
    if summary.budget:
        print(f"\n{summary.budget.message}")
    print(f"\nwrote {base / 'frontier.json'}" + (f", {plot}" if plot else ""))
    return summary


def _unique(names: list[str]) -> list[str]:
    """Bundle names as folder names, a repeated one numbered (two bundles may share a name)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("note: matplotlib is not installed, no frontier plot (pip install matplotlib)")
        return False
    return True


def plan(bundle: Bundle, settings: BenchSettings) -> tuple[list[Job], list[BenchRow]]:
    """(artifact, backend) pairs to measure, and note rows for artifacts nothing here can run."""
    if settings.backends:  # named by the user: each must work here, or it is an error
        usable = [require_available(get_backend(n)).name for n in settings.backends]
    else:
        usable = [n for n in DEFAULT_BACKENDS if get_backend(n).unavailable_reason() is None]
    arts = [bundle.artifact(f) for f in settings.artifacts] if settings.artifacts else list(bundle.artifacts)
    jobs, notes = [], []
    for art in arts:
        runners = [n for n in usable if get_backend(n).accepts(art)]
        jobs += [Job(art.file, n, art.precision, art.target, art.size_bytes or art.path.stat().st_size) for n in runners]
        if not runners:
            needs = "/".join(_backends_for(art)) or "another runtime"
            notes.append(BenchRow(artifact=art.file, backend=None, precision=art.precision, target=art.target,
                                  size_mb=round(art.size_bytes / 1e6, 2), status="skipped",
                                  note=f"skipped: target {art.target} needs {needs}, not selected or not usable here"))
    if settings.reference_checkpoint:
        ckpt = Path(settings.reference_checkpoint)
        if not ckpt.is_file():
            raise UserError(f"--reference-checkpoint {ckpt} not found: pass the best.pt the bundle came from")
        jobs.append(Job(str(ckpt), "torch-eager", "fp32", "reference", ckpt.stat().st_size))
    return jobs, notes


def _backends_for(art: Artifact) -> list[str]:
    return [n for n in list_backends() if get_backend(n).accepts(art) and n != "onnxruntime"]
