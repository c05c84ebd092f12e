"""Which artifact of a bundle ``predict`` and ``serve`` run when ``--artifact`` is not given: the
fastest one within the accuracy budget for this device, with the reason said.

Candidates are the artifacts the backend runs here that export did not mark over the accuracy
budget. Among them:

1. **Measured**: when a ``bench.json`` of this bundle (``runs/bench/<bundle name>/bench.json``, or
   ``--bench PATH``) was measured on this same device (CPU model, ISA class and GPU names) with this
   backend, and it measured every candidate, the one with the lowest SingleStream p50 (batch 1).
2. **Static rule** otherwise: by precision, ``STATIC_ORDER`` for the device the backend runs on
   (INT8 first on a CPU, where its integer kernels are about twice as fast; FP16 first on CUDA, where
   onnxruntime runs a QDQ INT8 graph mostly dequantised; INT8 first on TensorRT), manifest order
   within a precision.

``--artifact`` always wins, and may name an over-budget artifact (``export --best-effort``).
``ArtifactChoice.line`` is the one line the commands print to stderr: which, why, what else was
within budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from formats.bench import BenchReport, BenchRow, read_bench
from formats.bench_setup import DeviceInfo
from formats.bundle import Artifact, Bundle
from formats.errors import UserError
from runtime.backends import get_backend

# precision order of the static rule, per the device a backend runs on
STATIC_ORDER = {"cpu": ("int8", "fp32", "fp16"), "cuda": ("fp16", "fp32", "int8"), "tensorrt": ("int8", "fp16", "fp32")}
BACKEND_DEVICE = {"onnxruntime-cpu": "cpu", "onnxruntime-cuda": "cuda", "onnxruntime-tensorrt": "tensorrt",
                  "tensorrt": "tensorrt"}


@dataclass(frozen=True)
class ArtifactChoice:
    artifact: Artifact
    reason: str  # e.g. "fastest measured here: SingleStream p50 0.41 ms (model.onnx 0.93 ms), from runs/..."
    others: tuple[str, ...]  # the other artifacts within the accuracy budget that this backend runs

    @property
    def line(self) -> str:
        also = f"; also within the accuracy budget: {', '.join(self.others)}" if self.others else ""
        return f"artifact: {self.artifact.file} ({self.reason}){also}"


def default_bench_path(bundle: Bundle) -> Path:
    """Where ``python -m runtime.bench <bundle>`` writes by default (relative to the working folder)."""
    return Path("runs") / "bench" / bundle.name / "bench.json"


def choose_artifact(bundle: Bundle, backend: str, artifact: str | None = None,
                    bench: str | Path | None = None) -> ArtifactChoice:
    """The artifact to run (module docstring); ``bench``: a bench.json that must exist, None: the
    default location when there is a file there."""
    spec = get_backend(backend)
    if artifact is not None:
        art = bundle.artifact(artifact)
        if not spec.accepts(art):
            raise UserError(f"backend {backend} cannot run {art.file} (format {art.format}, target "
                            f"{art.target}): pick another --backend or --artifact")
        return ArtifactChoice(art, "named with --artifact", ())
    candidates = _within_budget(bundle, backend)
    if len(candidates) == 1 and bench is None:
        return ArtifactChoice(candidates[0], f"the only artifact within the accuracy budget that {backend} runs", ())
    report, why_not = _bench_report(bundle, bench)
    if report is not None:
        where = bench or default_bench_path(bundle)
        chosen, why_not = _fastest_measured(candidates, report, backend, where, bundle.root)
        if chosen is not None:
            return chosen
    return _static_choice(candidates, backend, why_not)


def _within_budget(bundle: Bundle, backend: str) -> list[Artifact]:
    spec = get_backend(backend)
    runnable = [art for art in bundle.artifacts if spec.accepts(art)]
    within = [art for art in runnable if art.within_budget is not False]
    if within:
        return within
    if runnable:
        raise UserError(f"every artifact of {bundle.root} that backend {backend} runs missed the accuracy budget "
                        f"({', '.join(a.file for a in runnable)}): name one with --artifact to use it anyway, "
                        f"or pick another --backend")
    raise UserError(f"bundle {bundle.root} has no artifact that backend {backend} runs: pick another --backend")


def _bench_report(bundle: Bundle, bench: str | Path | None) -> tuple[BenchReport | None, str]:
    """(the report, "") or (None, why there is none). A named file must exist and read; the default
    one is used only when it is there and readable."""
    if bench is not None:
        if not Path(bench).is_file():
            raise UserError(f"--bench {bench} not found: pass the bench.json python -m runtime.bench wrote "
                            f"(runs/bench/<bundle name>/bench.json), or leave --bench out")
        return read_bench(bench), ""
    path = default_bench_path(bundle)
    if not path.is_file():
        return None, f"no {path} (python -m runtime.bench {bundle.root} measures it)"
    try:
        return read_bench(path), ""
    except UserError as exc:
        return None, f"{path} unreadable ({exc})"


def _fastest_measured(candidates: list[Artifact], report: BenchReport, backend: str, where: str | Path,
                      bundle_root: Path) -> tuple[ArtifactChoice | None, str]:
    """The candidate with the lowest SingleStream p50 in ``report``, or (None, why it does not apply)."""
    from runtime.device import device_info  # nvidia-smi: only when there is a report to compare with
    stale = [a.file for a in candidates if not _same_file(report, a, bundle_root)]
    if stale:
        return None, f"{where} measured another export of {', '.join(stale)}"
    here = device_info()
    if not same_device(report.device, here):
        return None, f"{where} was measured on another device ({_device(report.device)}, here {_device(here)})"
    rows = _rows(report, backend)
    missing = [a.file for a in candidates if a.file not in rows]
    if missing:
        return None, f"{where} has no {bench_backend(backend)} measurement of {', '.join(missing)}"
    ranked = sorted(candidates, key=lambda a: _p50(rows[a.file]))
    best, rest = ranked[0], ranked[1:]
    versus = ", ".join(f"{a.file} {_p50(rows[a.file]):.2f} ms" for a in rest)
    reason = (f"fastest measured on this device: SingleStream p50 {_p50(rows[best.file]):.2f} ms"
              f"{f' against {versus}' if versus else ''}, from {where}")
    return ArtifactChoice(best, reason, tuple(a.file for a in rest)), ""


def _static_choice(candidates: list[Artifact], backend: str, why_not: str) -> ArtifactChoice:
    device = backend_device(backend)
    order = STATIC_ORDER[device]
    ranked = sorted(candidates, key=lambda a: order.index(a.precision) if a.precision in order else len(order))
    rule = f"static rule for {device}: {' > '.join(p.upper() for p in order)}"
    return ArtifactChoice(ranked[0], f"{rule}; {why_not}" if why_not else rule, tuple(a.file for a in ranked[1:]))


def bench_backend(backend: str) -> str:
    """The backend name bench rows carry for ``backend``: ``onnxruntime`` is CUDA or CPU, as it resolves here."""
    return get_backend(backend).here


def backend_device(backend: str) -> str:
    """cpu, cuda or tensorrt: what the static rule orders precisions for."""
    return BACKEND_DEVICE.get(bench_backend(backend), "cpu")


def same_device(a: DeviceInfo, b: DeviceInfo) -> bool:
    """Same CPU model, integer-kernel class and GPUs (by name): where one's timings hold for the other."""
    return a.cpu == b.cpu and a.isa == b.isa and [g.name for g in a.gpus] == [g.name for g in b.gpus]


def _device(d: DeviceInfo) -> str:
    return ", ".join([d.cpu, *(g.name for g in d.gpus)])


def _same_file(report: BenchReport, art: Artifact, bundle_root: Path) -> bool:
    """Whether the report measured this very file (sha256); a report without checksums: the same bundle folder."""
    if report.bundle.artifacts_sha256 is not None and art.sha256:
        return report.bundle.artifacts_sha256.get(art.file) == art.sha256
    return Path(report.bundle.path).resolve() == bundle_root.resolve()


def _rows(report: BenchReport, backend: str) -> dict[str, BenchRow]:
    names = {backend, bench_backend(backend)}
    return {r.artifact: r for r in report.results if r.status == "ok" and r.backend in names}


def _p50(row: BenchRow) -> float:
    assert row.single_stream is not None  # an "ok" row has it (formats.bench)
    return row.single_stream.p50_ms
