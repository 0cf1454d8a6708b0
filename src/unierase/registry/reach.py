"""Reaching the tracking server: bounded HTTP calls, a few retries when it cannot be reached, then one
clear error.

MLflow's own client retries a refused connection 7 times with backoff and waits up to 120 s per call,
so a dead server surfaced only after many minutes, and as an ``INTERNAL_ERROR`` that callers took for
"no such model" (a run then built on the base model). Here a call that cannot reach the server is
retried ``registry.retries`` times, ``registry.retry_delay_s`` apart, and then raises
`TrackingUnavailableError`, which names the server; every other error passes through at once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

from unierase.config import RegistryConfig

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Most telling first: the first one found is what the error message reports.
_UNREACHABLE_TEXT = ("Connection refused", "Read timed out", "timed out", "Failed to establish", "Max retries exceeded")


class TrackingUnavailableError(ConnectionError):
    """The tracking server could not be reached after the configured retries."""


def bound_http_calls(config: RegistryConfig) -> None:
    """Bounds each HTTP call of the MLflow client (unless the environment already sets the bounds): at
    most ``registry.http_timeout_s`` seconds and no retries of its own, since `call_with_retries` retries."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(config.http_timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def is_unreachable(err: BaseException) -> bool:
    """Whether an error says the tracking server could not be reached (refused, timed out, unavailable)."""
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    try:
        import requests

        if isinstance(err, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return True
    except ImportError:  # pragma: no cover - requests comes with mlflow
        pass
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        if getattr(err, "error_code", None) == "TEMPORARILY_UNAVAILABLE":
            return True
        text = str(err)
        return "API request to" in text and any(t in text for t in _UNREACHABLE_TEXT)
    return False


def _reason(err: BaseException) -> str:
    text = str(err)
    return next(
        (t.lower() for t in _UNREACHABLE_TEXT if t in text), text.splitlines()[0][:200] if text else type(err).__name__
    )


def call_with_retries(call: Callable[[], T], config: RegistryConfig, what: str) -> T:
    """Runs ``call``; when it cannot reach the tracking server, retries it ``config.retries`` times.

    Args:
        call: The registry call (idempotent: a read, or a write guarded against doing its work twice).
        config: The registry section (server URI, retries, delay).
        what: What the call does, for the message ("registering the erasure").

    Raises:
        TrackingUnavailableError: The server was still unreachable after the last attempt.
    """
    attempts = config.retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as err:
            if not is_unreachable(err):
                raise
            if attempt == attempts:
                raise TrackingUnavailableError(
                    f"the tracking server {config.tracking_uri} could not be reached ({what}) after {attempts} "
                    f"attempt(s), {config.retry_delay_s:g} s apart ({_reason(err)})"
                ) from err
            logger.warning(
                "tracking server %s unreachable for %s (attempt %d of %d); retrying in %g s",
                config.tracking_uri,
                what,
                attempt,
                attempts,
                config.retry_delay_s,
            )
            time.sleep(config.retry_delay_s)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
