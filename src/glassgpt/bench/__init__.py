"""Benchmarks: every trade-off the design makes, measured side by side.

`glassgpt bench [WHAT] [--quick] [--out DIR]` or `glassgpt.bench.run(what, ...)`.
Suites (WHAT): attention, layernorm, positions, hooks, precision, compile,
kvcache, transformers, scaling, mfu, train; `all` runs every one. Each run writes
one JSON file (machine, settings, every raw time, ratios, figures) and, for
scaling, a PNG. See benchmarks/README.md for how to read the numbers.
"""

from glassgpt.bench.report import Settings, format_markdown, format_table
from glassgpt.bench.runner import CHOICES, SUITES, run

__all__ = ["run", "SUITES", "CHOICES", "Settings", "format_table", "format_markdown"]
