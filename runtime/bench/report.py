"""Benchmark output: the printed table and the PNG plots (drawn by runtime.bench.plots)."""
from __future__ import annotations

from pathlib import Path

from formats.bench import BenchRow
from runtime.bench.measure import P99_MIN_ITERATIONS


def percent(fraction: float | None) -> str:
    """A top-1 fraction as every table and plot shows it: ``70.83%``; ``-`` when absent."""
    return "-" if fraction is None else f"{100 * fraction:.2f}%"


def format_table(rows: tuple[BenchRow, ...]) -> str:
    head = f"{'artifact':<22} {'backend':<18} {'size MB':>8} {'top-1':>7} {'p50 ms':>8} {'p90 ms':>8} " \
           f"{'p99 ms':>8} {'FPS (batch)':>14}"
    lines = [head, "-" * len(head)]
    for r in rows:
        start = f"{r.artifact[:22]:<22} {(r.backend or '-'):<18} {r.size_mb:>8.1f}"
        s = r.single_stream
        if s is None:  # skipped or failed
            lines.append(f"{start}  {r.note}")
            continue
        top1 = percent(r.top1)
        fps = f"{r.best_fps:.1f} (@{r.best_batch})" if r.best_fps else "-"
        p99 = f"{s.p99_ms:.2f}" + ("" if s.p99_reliable else "*")
        lines.append(f"{start} {top1:>7} {s.p50_ms:>8.2f} {s.p90_ms:>8.2f} {p99:>8} {fps:>14}")
    if any(r.single_stream is not None and not r.single_stream.p99_reliable for r in rows):
        lines.append(f"* p99 from fewer than {P99_MIN_ITERATIONS} runs: about the slowest run, not a "
                     f"percentile (raise --seconds)")
    return "\n".join(lines)


def write_plots(rows: tuple[BenchRow, ...], out: Path) -> list[str]:
    """The two PNG plots in ``out``; none (with a note) when matplotlib is not installed."""
    from runtime.bench.plots import plot_accuracy_vs_latency, plot_latency_vs_batch
    try:
        written = [plot_latency_vs_batch(rows, out / "latency_vs_batch.png"),
                   plot_accuracy_vs_latency(rows, out / "accuracy_vs_latency.png")]
    except ImportError:
        print("note: matplotlib is not installed, no plots (pip install matplotlib)")
        return []
    return [str(p) for p in written if p is not None]
