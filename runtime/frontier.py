"""Several bundles on one device: one table, the accuracy/latency frontier per precision, and the
most accurate artifact within a latency budget.

Latency is the SingleStream (batch 1) p50 of ``runtime.bench`` on this machine (the median of many
runs, steady on a busy host where the tail is not; p90 is shown beside it); accuracy is the top-1
measured on ``--data`` when given, else the test top-1 the export recorded in the manifest
(``top1 source`` says which). A point is on its precision's frontier when no faster point of the
same precision is at least as accurate. An artifact that export marked over its accuracy budget
(``--best-effort``) is never the pick while another one is within it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def frontier_rows(reports: list[dict[str, Any]], recorded: list[dict[str, float]],
                  names: list[str] | None = None, over_budget: list[set[str]] | None = None) -> list[dict[str, Any]]:
    """One row per measured (bundle, artifact, backend); ``recorded[i]`` maps artifact file -> export
    top-1; ``names[i]`` names bundle i (default: its manifest name); ``over_budget[i]`` the artifact files
    export marked over the accuracy budget."""
    rows = []
    for i, (report, top1_of) in enumerate(zip(reports, recorded)):
        for r in report["results"]:
            if r["status"] != "ok" or r["backend"] == "torch-eager":
                continue
            measured = r.get("top1")
            top1 = measured if measured is not None else top1_of.get(r["artifact"])
            rows.append({"bundle": names[i] if names else report["bundle"]["name"], "arch": report["bundle"]["arch"],
                         "artifact": r["artifact"], "backend": r["backend"], "precision": r["precision"], "top1": top1,
                         "top1_source": "measured (--data)" if measured is not None else "export (test split)",
                         "p50_ms": r["single_stream"]["p50_ms"], "p90_ms": r["single_stream"]["p90_ms"],
                         "best_fps": r.get("best_fps"), "size_mb": r["size_mb"],
                         "within_accuracy_budget": r["artifact"] not in (over_budget[i] if over_budget else ())})
    return mark_frontier(rows)


def mark_frontier(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set ``frontier`` on every row: Pareto-optimal (p50 latency down, top-1 up) within its precision."""
    for precision in {r["precision"] for r in rows}:
        best = -1.0  # the best top-1 of the faster rows
        mine = [r for r in rows if r["precision"] == precision]
        for r in sorted(mine, key=lambda r: (r["p50_ms"], -_top1(r))):
            r["frontier"] = r["top1"] is not None and r["top1"] > best
            best = max(best, _top1(r))
    return sorted(rows, key=lambda r: (r["precision"], r["p50_ms"]))


def _top1(row: dict[str, Any]) -> float:
    """The row's top-1, with -1 for unknown (0.0 is a value)."""
    return row["top1"] if row["top1"] is not None else -1.0


def pick(rows: list[dict[str, Any]], budget_ms: float) -> dict[str, Any]:
    """The most accurate row whose p50 is within ``budget_ms``, never one over its accuracy budget while
    another is within it; else the fastest row, said plainly."""
    scored = [r for r in rows if r["top1"] is not None]
    trusted = [r for r in scored if r.get("within_accuracy_budget", True)] or scored
    within = [r for r in trusted if r["p50_ms"] <= budget_ms]
    if within:
        best = max(within, key=lambda r: (r["top1"], -r["p50_ms"]))
        return {"budget_ms": budget_ms, "met": True, "choice": best,
                "message": f"most accurate within {budget_ms:g} ms (p50, batch 1): {_name(best)}, top-1 "
                           f"{100 * best['top1']:.2f}% at {best['p50_ms']:.2f} ms (p90 {best['p90_ms']:.2f} ms)"}
    if not scored:
        return {"budget_ms": budget_ms, "met": False, "choice": None,
                "message": "no artifact has a top-1 to compare (pass --data, or bundles with recorded accuracy)"}
    closest = min(trusted, key=lambda r: r["p50_ms"])
    return {"budget_ms": budget_ms, "met": False, "choice": closest,
            "message": f"no artifact meets {budget_ms:g} ms (p50, batch 1) on this device; the fastest is "
                       f"{_name(closest)} at {closest['p50_ms']:.2f} ms (top-1 {100 * closest['top1']:.2f}%)"}


def _name(r: dict[str, Any]) -> str:
    return f"{r['bundle']} {r['artifact']} on {r['backend']}"


def format_frontier(rows: list[dict[str, Any]]) -> str:
    head = (f"{'bundle':<28} {'arch':<28} {'artifact':<20} {'prec':<5} {'top-1':>7} {'p50 ms':>8} {'p90 ms':>8} "
            f"{'size MB':>8}  frontier")
    lines = [head, "-" * len(head)]
    for r in rows:
        top1 = f"{100 * r['top1']:.2f}" if r["top1"] is not None else "-"
        lines.append(f"{r['bundle'][:28]:<28} {r['arch'][:28]:<28} {r['artifact'][:20]:<20} {r['precision']:<5} "
                     f"{top1:>7} {r['p50_ms']:>8.2f} {r['p90_ms']:>8.2f} {r['size_mb']:>8.1f}  "
                     f"{'*' if r['frontier'] else ''}{'' if r.get('within_accuracy_budget', True) else '!'}")
    sources = sorted({r["top1_source"] for r in rows})
    lines.append(f"top-1: {', '.join(sources) or '-'}; latency: SingleStream p50 (p90 beside it), batch 1; * on its "
                 f"precision's frontier; ! over its accuracy budget (never picked while another is within)")
    return "\n".join(lines)
