"""Benchmark plots as PNG: latency against batch size, accuracy against latency, and the
accuracy/latency frontier of several bundles per precision.

matplotlib is optional on a device: it is imported here, when plots are drawn, and an ImportError
tells the caller to skip them.
"""
from __future__ import annotations

import math
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


def latency_points(row: BenchRow) -> list[tuple[int, float]]:
    """(batch size, p50 ms per batch) of every measured batch size of ``row``. Batch 1 is the
    SingleStream p50, the table's figure (runtime.bench.measure measures batch 1 once)."""
    points = {o.batch: o.latency.p50_ms for o in row.offline if o.latency is not None}
    if row.single_stream is not None:
        points[1] = row.single_stream.p50_ms
    return sorted(points.items())


def latency_figure(rows: tuple[BenchRow, ...]) -> Any:
    """Per-batch p50 latency (ms) against batch size, one line per artifact and backend, ticks at
    the measured batch sizes; None when nothing was measured."""
    measured = [r for r in rows if r.status == "ok"]
    if not measured:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    batches = sorted({b for r in measured for b, _ in latency_points(r)})
    for r in measured:
        points = latency_points(r)
        ax.plot([b for b, _ in points], [ms for _, ms in points], marker="o", label=_label(r))
    ax.set(xscale="log", yscale="log", xlabel="batch size (batch 1: SingleStream)",
           ylabel="latency per batch, p50 (ms)", title="Latency against batch size")
    ax.set_xticks(batches, [str(b) for b in batches])  # the measured sizes, not powers of ten
    ax.xaxis.set_minor_locator(plt.NullLocator())
    _plain_numbers(plt, ax.yaxis)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def plot_latency_vs_batch(rows: tuple[BenchRow, ...], path: Path) -> Path | None:
    fig = latency_figure(rows)
    return None if fig is None else _save(fig, _pyplot(), path)


def plot_accuracy_vs_latency(rows: tuple[BenchRow, ...], path: Path) -> Path | None:
    """Top-1 (%) against SingleStream p50 latency, a whisker to p90; only rows with a top-1 (bench --data)."""
    scored = [r for r in rows if r.single_stream is not None and r.top1 is not None]
    if not scored:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in scored:
        s, top1 = r.single_stream, 100 * (r.top1 or 0.0)
        assert s is not None  # scored rows are measured ones
        ax.errorbar(s.p50_ms, top1, xerr=[[0], [s.p90_ms - s.p50_ms]], fmt="o", capsize=3)
        ax.annotate(_label(r), (s.p50_ms, top1), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set(xlabel="SingleStream latency, p50, batch 1 (ms; whisker to p90)", ylabel="top-1 (%)",
           title="Accuracy against latency")
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
    if budget_ms is not None:
        ax.axvline(budget_ms, color="grey", linestyle="--", linewidth=1, label=f"budget {budget_ms:g} ms")
    ax.set(xscale="log", xlabel="SingleStream latency, p50, batch 1 (ms)", ylabel="top-1 (%)",
           title="Accuracy against latency, per precision")
    _plain_numbers(plt, ax.xaxis)
    points = [(r.p50_ms, top1) for r, top1 in scored]
    for (r, top1), dy in zip(scored, label_offsets(ax, points, [r.bundle for r, _ in scored])):
        ax.annotate(r.bundle, (r.p50_ms, top1), fontsize=7, xytext=(4, dy), textcoords="offset points")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def _plain_numbers(plt: Any, axis: Any) -> None:
    """A log axis labelled 0.5, 2, 6 rather than 6x10^0; its minor ticks labelled while it spans a
    decade, only 2 and 5 while it spans two, none beyond (no crowding)."""
    axis.axes.autoscale_view()
    lo, hi = axis.get_view_interval()
    span = hi / lo if lo > 0 else float("inf")

    def minor(v: float, _: Any) -> str:
        lead = round(v / 10 ** math.floor(math.log10(v))) if v > 0 else 0
        return f"{v:g}" if span <= 10 or (span <= 100 and lead in (2, 5)) else ""
    axis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(plt.FuncFormatter(minor))


def label_offsets(ax: Any, points: list[tuple[float, float]], labels: list[str], size: float = 7) -> list[float]:
    """The vertical offset (points) of each label so that none covers another: a label that would
    overlap one already placed goes a line higher. Labels start 4 points right of their point."""
    ax.autoscale_view()
    xy = ax.transData.transform(points) * (72 / ax.figure.dpi) if points else []  # data -> points
    placed: list[tuple[float, float, float]] = []  # (left, bottom, width) of the labels so far
    offsets = []
    order = sorted(range(len(points)), key=lambda i: (xy[i][0], xy[i][1]))
    for i in order:
        left, width, dy = xy[i][0] + 4, 0.6 * size * len(labels[i]), 3.0
        while any(left < pl + pw and pl < left + width and abs(xy[i][1] + dy - pb) < size + 1
                  for pl, pb, pw in placed):
            dy += size + 1
        placed.append((left, xy[i][1] + dy, width))
        offsets.append((i, dy))
    return [dy for _, dy in sorted(offsets)]


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
