"""Several bundles on one device: one table, the accuracy/latency frontier per precision, and the
most accurate artifact within a latency budget (written as formats.frontier's records).

Latency is the SingleStream (batch 1) p50 of ``runtime.bench`` on this machine (the median of many
runs, steady on a busy host where the tail is not; p90 is shown beside it); accuracy is the top-1
measured on ``--data`` when given, else the test top-1 the export recorded in the manifest
(``top1 source`` says which). A point is on its precision's frontier when no faster point of the
same precision is at least as accurate. An artifact that export marked over its accuracy budget
(``--best-effort``) is never the pick while another one is within it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from formats.bench import BenchReport
from formats.frontier import BudgetPick, FrontierRow


@dataclass(frozen=True)
class MeasuredBundle:
    """One bundle's bench report, with what the manifest adds: its name in the table, the test top-1
    export recorded per artifact file, and the artifact files export marked over the accuracy budget."""

    report: BenchReport
    name: str
    recorded_top1: dict[str, float]
    over_budget: frozenset[str] = frozenset()


def frontier_rows(measured: list[MeasuredBundle]) -> list[FrontierRow]:
    """One row per measured (bundle, artifact, backend), the frontier marked."""
    rows = []
    for m in measured:
        for r in m.report.results:
            if r.status != "ok" or r.backend == "torch-eager" or r.single_stream is None:
                continue
            top1 = r.top1 if r.top1 is not None else m.recorded_top1.get(r.artifact)
            rows.append(FrontierRow(
                bundle=m.name, arch=m.report.bundle.arch, artifact=r.artifact, backend=r.backend or "", top1=top1,
                precision=r.precision, top1_source="measured (--data)" if r.top1 is not None else "export (test split)",
                p50_ms=r.single_stream.p50_ms, p90_ms=r.single_stream.p90_ms, best_fps=r.best_fps, size_mb=r.size_mb,
                within_accuracy_budget=r.artifact not in m.over_budget, frontier=False))
    return mark_frontier(rows)


def mark_frontier(rows: list[FrontierRow]) -> list[FrontierRow]:
    """Set ``frontier`` on every row: Pareto-optimal (p50 latency down, top-1 up) within its precision;
    sorted by precision, then p50."""
    marked = []
    for precision in sorted({r.precision for r in rows}):
        best = -1.0  # the best top-1 of the faster rows
        for r in sorted((r for r in rows if r.precision == precision), key=lambda r: (r.p50_ms, -_top1(r))):
            marked.append(dataclasses.replace(r, frontier=r.top1 is not None and r.top1 > best))
            best = max(best, _top1(r))
    return marked


def _top1(row: FrontierRow) -> float:
    """The row's top-1, with -1 for unknown (0.0 is a value)."""
    return row.top1 if row.top1 is not None else -1.0


def pick(rows: list[FrontierRow], budget_ms: float) -> BudgetPick:
    """The most accurate row whose p50 is within ``budget_ms``, never one over its accuracy budget while
    another is within it; else the fastest row, said plainly."""
    scored = [r for r in rows if r.top1 is not None]
    trusted = [r for r in scored if r.within_accuracy_budget] or scored
    within = [r for r in trusted if r.p50_ms <= budget_ms]
    if within:
        best = max(within, key=lambda r: (r.top1, -r.p50_ms))
        return BudgetPick(budget_ms, True, best,
                          f"most accurate within {budget_ms:g} ms (p50, batch 1): {best.label}, top-1 "
                          f"{100 * best.top1:.2f}% at {best.p50_ms:.2f} ms (p90 {best.p90_ms:.2f} ms)")
    if not scored:
        return BudgetPick(budget_ms, False, None,
                          "no artifact has a top-1 to compare (pass --data, or bundles with recorded accuracy)")
    closest = min(trusted, key=lambda r: r.p50_ms)
    return BudgetPick(budget_ms, False, closest,
                      f"no artifact meets {budget_ms:g} ms (p50, batch 1) on this device; the fastest is "
                      f"{closest.label} at {closest.p50_ms:.2f} ms (top-1 {100 * closest.top1:.2f}%)")


def format_frontier(rows: list[FrontierRow]) -> str:
    head = (f"{'bundle':<28} {'arch':<28} {'artifact':<20} {'prec':<5} {'top-1':>8} {'p50 ms':>8} {'p90 ms':>8} "
            f"{'size MB':>8}  frontier")
    lines = [head, "-" * len(head)]
    for r in rows:
        top1 = f"{100 * r.top1:.2f}%" if r.top1 is not None else "-"
        lines.append(f"{r.bundle[:28]:<28} {r.arch[:28]:<28} {r.artifact[:20]:<20} {r.precision:<5} "
                     f"{top1:>8} {r.p50_ms:>8.2f} {r.p90_ms:>8.2f} {r.size_mb:>8.1f}  "
                     f"{'*' if r.frontier else ''}{'' if r.within_accuracy_budget else '!'}")
    sources = sorted({r.top1_source for r in rows})
    lines.append(f"top-1: {', '.join(sources) or '-'}; latency: SingleStream p50 (p90 beside it), batch 1; * on its "
                 f"precision's frontier; ! over its accuracy budget (never picked while another is within)")
    return "\n".join(lines)
