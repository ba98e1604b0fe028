"""Benchmarks (`make bench`): tables printed, never timed assertions in tests."""
