"""Benchmark plots as PNG: latency against batch size, accuracy against latency, and the
accuracy/latency frontier of several bundles per precision.

matplotlib is optional on a device: it is imported here, when plots are drawn, and an ImportError
tells the caller to skip them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from formats.bench import BenchRow
from formats.files import write_error
from formats.frontier import FrontierRow


def _pyplot() -> Any:
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on a device or in CI
    import matplotlib.pyplot as plt
    return plt


def _label(row: BenchRow) -> str:
    return f"{row.artifact} / {row.backend}"


def plot_latency_vs_batch(rows: tuple[BenchRow, ...], path: Path) -> Path | None:
    """Per-batch p50 latency (ms) against batch size, one line per artifact and backend."""
    measured = [r for r in rows if r.status == "ok"]
    if not measured:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in measured:
        points = [(o.batch, o.latency.p50_ms) for o in r.offline if o.latency is not None]
        ax.plot([b for b, _ in points], [ms for _, ms in points], marker="o", label=_label(r))
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="latency per batch, p50 (ms)",
           title="Latency against batch size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, plt, path)


def plot_accuracy_vs_latency(rows: tuple[BenchRow, ...], path: Path) -> Path | None:
    """Top-1 against SingleStream p90 latency; only rows that have a top-1 (bench --data)."""
    scored = [r for r in rows if r.single_stream is not None and r.top1 is not None]
    if not scored:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in scored:
        p90 = r.single_stream.p90_ms  # type: ignore[union-attr]
        ax.scatter(p90, r.top1, s=40)
        ax.annotate(_label(r), (p90, r.top1), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set(xlabel="SingleStream latency, p90 (ms)", ylabel="top-1", title="Accuracy against latency")
    ax.grid(True, alpha=0.3)
    return _save(fig, plt, path)


def plot_frontier(rows: list[FrontierRow], path: Path, budget_ms: float | None = None) -> Path | None:
    """Top-1 (%) against p50 latency, one colour per precision, its frontier drawn as a line, the latency
    budget as a vertical line."""
    scored = [(r, 100 * r.top1) for r in rows if r.top1 is not None]
    if not scored:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for precision in [p for p in ("fp32", "fp16", "int8") if any(r.precision == p for r, _ in scored)]:
        mine = [(r, top1) for r, top1 in scored if r.precision == precision]
        dots = ax.scatter([r.p50_ms for r, _ in mine], [top1 for _, top1 in mine], s=36, label=precision)
        front = sorted(((r, top1) for r, top1 in mine if r.frontier), key=lambda rt: rt[0].p50_ms)
        ax.plot([r.p50_ms for r, _ in front], [top1 for _, top1 in front], color=dots.get_facecolor()[0],
                drawstyle="steps-post", alpha=0.7)
        for r, top1 in mine:
            ax.annotate(r.bundle, (r.p50_ms, top1), fontsize=7, xytext=(4, 3), textcoords="offset points")
    if budget_ms is not None:
        ax.axvline(budget_ms, color="grey", linestyle="--", linewidth=1, label=f"budget {budget_ms:g} ms")
    ax.set(xscale="log", xlabel="SingleStream latency, p50, batch 1 (ms)", ylabel="top-1 (%)",
           title="Accuracy against latency, per precision")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: Path) -> Path:
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=120)
        tmp.replace(path)  # atomic: a reader never sees half a PNG
    except OSError as exc:  # a full or read-only disk: one error naming the file, never half a plot
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from None
    finally:
        plt.close(fig)
    return path
