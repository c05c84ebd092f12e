"""``python -m runtime.bench <bundle>... [options]``: the options are BenchSettings' fields.

``--backend a,b`` ``--artifact f1,f2`` ``--batch 1,8,32`` ``--data DIR`` ``--limit N`` ``--seconds S``
(per measurement) ``--warmup N`` ``--threads N`` ``--out DIR`` ``--no-plots``
``--reference-checkpoint best.pt`` (adds a PyTorch eager row when torch is installed) ``--timeout S``
(per artifact and backend; a worker that outlives it becomes a failed row). ``--verbose`` (onnxruntime's
own warnings and the workers' stderr too). ``--budget-ms X`` names the most accurate artifact whose SingleStream p50 is within X ms (p90 shown beside it), never one
that export marked over the accuracy budget while another is within it.
"""
from __future__ import annotations

from pathlib import Path

from formats.bench import BenchReport
from formats.cli import Positional, parser_for, settings_from
from formats.errors import run_cli
from formats.frontier import Frontier
from runtime.bench.run import run_bench, run_bench_many
from runtime.settings import BenchSettings

HELP = "Benchmark a bundle on this device, MLPerf-style: ``python -m runtime.bench <bundle> [options]``."


def main(argv: list[str] | None = None) -> None:
    """Arguments are parsed (strictly, from BenchSettings) before any bundle is opened."""
    parser = parser_for("python -m runtime.bench", HELP, BenchSettings,
                        [Positional("bundles", "bundle folders written by python -m export (several: one frontier)",
                                    "+")])
    args = parser.parse_args(argv)

    def bench() -> BenchReport | Frontier:
        settings = settings_from(BenchSettings, args)  # its checks are UserErrors: one line, no traceback
        if len(args.bundles) == 1:
            return run_bench(args.bundles[0], settings)
        return run_bench_many([Path(b) for b in args.bundles], settings)
    run_cli(bench)


if __name__ == "__main__":
    main()
