"""Benchmarks: the asv suite (bench_*.py), the instruction-count gate and the peer comparison."""
