"""Offline, telemetry-free defaults for every entry point (tests, benchmarks), the same the Makefile exports:
nothing is fetched from a model hub at run time and no service phones home."""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "TOKENIZERS_PARALLELISM": "false",
}


def set_offline_defaults() -> None:
    """Sets each variable unless the caller already chose a value; call before importing transformers,
    mlflow or prefect."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
