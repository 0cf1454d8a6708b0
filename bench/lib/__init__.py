"""Shared pieces of the benchmark suite under ``bench/`` (quality, sequential, cost): workloads built
from the generated fictitious authors, one evaluation protocol for every method, per-phase time and
memory measurement, and the JSON, markdown and plot outputs.

The scripts in ``bench/`` are thin: they parse flags, call these and print a table.
"""
