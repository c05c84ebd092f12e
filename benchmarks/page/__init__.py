"""The renderers of docs/results.md (``benchmarks/results_page.py``), one module per result family."""
