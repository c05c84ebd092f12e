"""Benchmark a bundle on this device, MLPerf-style: ``python -m runtime.bench <bundle> [options]``.

For every artifact and every backend that can run it here (or those named with ``--backend``):
warm-up, then SingleStream latency at batch 1 (p50/p90/p99 in ms; MLPerf reports p90), Offline
throughput per batch size (images/s), model size, peak memory, top-1 on ``--data`` when given,
and on a Jetson the module input power from tegrastats. Prints one table, writes ``bench.json``
(``formats.bench``: with the device and software versions) and two PNG plots. With ``--data``, each
artifact's top-1 drop against the FP32 model on those images is set beside the manifest's and
flagged when the two differ beyond their intervals (runtime.bench.compare).

Each (artifact, backend) is measured in a fresh worker process, so one model's memory, threads
and allocator state cannot colour the next one's figures, and "peak memory" is that process's own
peak resident set (VmHWM: the interpreter, the runtime libraries and the model, during the timed
runs; the accuracy pass comes after it is read).

Several bundles (``python -m runtime.bench b1 b2 b3 --budget-ms 2``): each is measured as above
into ``<out>/<bundle name>/``, then one table of every bundle and artifact, the accuracy/latency
frontier per precision (``frontier.json``: ``formats.frontier``; ``frontier.png``) and the pick within
the budget (runtime.bench.frontier). This runs on the device alone: bundles copied to a Jetson need
only the runtime.

Modules: ``run`` (the jobs, the report, the files), ``worker`` and ``jobs`` (one job in a fresh
process, and what travels to and from it), ``measure`` (the timing), ``evaluation`` and ``compare``
(``--data``), ``frontier`` (several bundles), ``report`` and ``plots`` (the table and PNGs). The
settings are ``runtime.settings.BenchSettings``; the command line is ``__main__``.
"""
from runtime.bench.run import plan, run_bench, run_bench_many

__all__ = ["plan", "run_bench", "run_bench_many"]
