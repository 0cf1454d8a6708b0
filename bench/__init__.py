"""Benchmarks: UniErase against the fine-tuning baselines on quality, sequential requests, time,
memory, storage and pipeline overhead. Run from the repo root:

    python -m bench.run_all          # every part (make bench)
    python -m bench.quality          # one part; --help lists its flags
    python -m bench.sequential
    python -m bench.cost
"""

from unierase.offline import set_offline_defaults

# Offline and quiet before anything imports transformers, mlflow or prefect (as the Makefile sets them).
set_offline_defaults()
