"""Parallel parts of a run: how work is cut into shards and merged (pure), and which Prefect task runner
runs the shards (in the flow's process, or on a Ray cluster through prefect-ray)."""
