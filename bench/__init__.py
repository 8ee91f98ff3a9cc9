"""Benchmarks: `make bench` (or bench-receiver, bench-pipeline, bench-reconciler); see README, Performance."""
