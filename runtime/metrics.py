"""Prometheus text-format metrics (exposition format 0.0.4) without the prometheus_client dependency.

Three kinds are enough for the server: counters, gauges and cumulative histograms, each with
optional labels. All updates take one lock; they are a few dictionary operations.
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _escape(value: str) -> str:
    """A label value in the text exposition format: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)  # first bucket with le >= value
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += value
        self.n += 1


class Metrics:
    def __init__(self, prefix: str = "vl2lite") -> None:
        self._lock = threading.Lock()
        self._prefix = prefix
        self._help: dict[str, tuple[str, str]] = {}  # name -> (type, help)
        self._values: dict[str, dict[tuple, float]] = {}
        self._histograms: dict[str, dict[tuple, _Histogram]] = {}
        self._buckets: dict[str, tuple[float, ...]] = {}

    def describe(self, name: str, kind: str, text: str, buckets: tuple[float, ...] = ()) -> None:
        self._help[name] = (kind, text)
        if kind == "histogram":
            self._buckets[name] = buckets
            self._histograms[name] = {}
        else:
            self._values[name] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[name][tuple(sorted(labels.items()))] = value

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._histograms[name]
            if key not in series:
                series[key] = _Histogram(self._buckets[name])
            series[key].observe(value)

    def render(self) -> str:
        """The whole registry in Prometheus text format."""
        lines = []
        with self._lock:
            for name, (kind, text) in self._help.items():
                full = f"{self._prefix}_{name}"
                lines += [f"# HELP {full} {text}", f"# TYPE {full} {kind}"]
                if kind == "histogram":
                    lines += self._render_histograms(full, self._histograms[name])
                else:
                    lines += [f"{full}{_labels(k)} {v:g}" for k, v in self._values[name].items()]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _render_histograms(full: str, series: dict[tuple, _Histogram]) -> list[str]:
        lines = []
        for key, h in series.items():
            cumulative = 0
            for le, count in zip(h.buckets, h.counts):
                cumulative += count
                lines.append(f"{full}_bucket{_labels(key + (('le', f'{le:g}'),))} {cumulative}")
            lines.append(f"{full}_bucket{_labels(key + (('le', '+Inf'),))} {h.n}")
            lines += [f"{full}_sum{_labels(key)} {h.total:g}", f"{full}_count{_labels(key)} {h.n}"]
        return lines
