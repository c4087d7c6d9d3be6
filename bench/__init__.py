"""Benchmarks: ``python -m bench`` (end to end) and ``python -m bench.clock_jitter`` (master clock)."""
