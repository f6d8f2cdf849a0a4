"""Benchmarks: commands that print figures (tests never assert timings). See docs/benchmarks.md."""
