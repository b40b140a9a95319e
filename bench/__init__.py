"""Benchmarks of the backorder pipeline and what they need (`make bench`)."""
