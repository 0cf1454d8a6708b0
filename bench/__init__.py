"""Benchmarks: UniErase against the fine-tuning baselines on quality, sequential requests, time,
memory, storage and pipeline overhead. Run from the repo root:

    python -m bench.run_all          # every part (make bench)
    python -m bench.quality          # one part; --help lists its flags
    python -m bench.sequential
    python -m bench.cost
"""

import os

# Offline and quiet before anything imports transformers, mlflow or prefect (as the Makefile sets them).
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)
