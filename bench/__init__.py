"""Benchmarks: throughput and latency measured outside the test suite (run with `python -m`)."""
