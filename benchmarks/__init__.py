"""Benchmarks outside the wheel: `python -m benchmarks.bench` from the repository root."""
