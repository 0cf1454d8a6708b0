"""Crash injection for the reliability tests: a named point in the erasure flow where the process can be
made to die (SIGKILL, as the OOM killer or a lost machine would) or to wait.

    UNIERASE_FAULT_AT=edit python -m flows.erasure ...        # killed as the edit starts
    UNIERASE_PAUSE_AT=register UNIERASE_PAUSE_FILE=/tmp/p \\
        python -m flows.erasure ...                           # writes /tmp/p at registration, waits until it is gone

The points are the flow's phases (`PHASES`); nothing happens unless one of the variables names the phase,
so in normal runs a fault point is one environment lookup. Tests only: never set these in production.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

logger = logging.getLogger(__name__)

FAULT_ENV = "UNIERASE_FAULT_AT"
PAUSE_ENV, PAUSE_FILE_ENV = "UNIERASE_PAUSE_AT", "UNIERASE_PAUSE_FILE"
PHASES = ("validate", "token", "edit", "evaluate", "register", "promote")
_PAUSE_LIMIT_S = 600.0


def fault_point(phase: str) -> None:
    """Kills this process with SIGKILL when ``UNIERASE_FAULT_AT`` names ``phase``; when
    ``UNIERASE_PAUSE_AT`` names it, writes ``UNIERASE_PAUSE_FILE`` and waits until that file is removed
    (at most ten minutes). Does nothing otherwise.

    Raises:
        ValueError: ``phase`` is not one of `PHASES` (a typo would make a test pass vacuously).
    """
    if phase not in PHASES:
        raise ValueError(f"unknown fault point {phase!r}; the phases are {', '.join(PHASES)}")
    if os.environ.get(FAULT_ENV) == phase:
        logger.warning("fault point %s: killing process %d (%s)", phase, os.getpid(), FAULT_ENV)
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(PAUSE_ENV) == phase and os.environ.get(PAUSE_FILE_ENV):
        marker = Path(os.environ[PAUSE_FILE_ENV])
        marker.write_text(f"{os.getpid()}\n", encoding="utf-8")
        logger.warning("fault point %s: paused until %s is removed", phase, marker)
        deadline = time.monotonic() + _PAUSE_LIMIT_S
        while marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
