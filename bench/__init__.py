"""Benchmarks: one command each, printing a table and writing JSON to bench/results/."""
