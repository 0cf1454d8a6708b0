"""Prefect tasks of the erasure flows: thin wrappers that load, call the core, save or log, and return
a reference (a path, a version number, a digest). Models and tensors never cross a task boundary.

Run from the repo root as part of the flows in ``flows/`` (not shipped in the wheel).
"""
