"""``meterline bench``: gateway, processor, pricing, delay and memory, each beside its limit.

Entry point: ``bench.run.run(Options(...))``; the command is ``meterline bench``
(meterline/cli/bench.py). How to read the numbers: docs/benchmarks.md.
"""
