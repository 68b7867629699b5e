"""Reproducible benchmarks: Conveyor side by side with the raw JetStream floor, JSON output.

.venv/bin/python -m bench.foundation [--out bench/results/foundation.json]
"""
