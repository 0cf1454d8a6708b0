"""One erasure at a time per registered model: an exclusive lock on a file under the registry's work dir.

An erasure builds on the champion, so two at once against the same registered model would both build
on the same parent, and the second promotion would silently drop the first request's edit. Each run
(and each rollback or late registration) holds ``<work_dir>/locks/<registered model>.lock`` from before
it resolves its parent until after it promotes. The lock is ``flock(2)``: the kernel releases it when
the holder exits, however it exits (SIGKILL included), so a killed run never leaves a stale lock.

It serialises runs on one machine (one file system). Runs on several machines against one tracking
server are serialised by the scheduled deployment's limit of one run at a time.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)


class RegistryBusyError(RuntimeError):
    """Another erasure of the same registered model held the lock longer than the wait allowed."""


def lock_path(lock_dir: str | Path, name: str) -> Path:
    """The lock file of a registered model."""
    return Path(lock_dir) / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".lock")


@contextmanager
def registry_lock(
    lock_dir: str | Path, name: str, timeout_s: float, holder: str = "", poll_s: float = 0.2
) -> Iterator[Path]:
    """Holds the exclusive lock of registered model ``name`` for the ``with`` block.

    Args:
        lock_dir: Folder of the lock files (created).
        name: Registered model name.
        timeout_s: Longest wait for another holder to finish.
        holder: What holds it (a request id), written into the file for the next waiter's message.
        poll_s: Seconds between attempts while waiting.

    Raises:
        RegistryBusyError: The lock was still held after ``timeout_s``; the message names the holder.
    """
    path = lock_path(lock_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline, waited = time.monotonic() + timeout_s, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RegistryBusyError(
                        f"another erasure of {name} is running ({_read_holder(path)}); it held {path} for over "
                        f"{timeout_s:g} s (registry.lock_timeout_s): try again when it has finished"
                    ) from None
                if not waited:
                    logger.warning("waiting for the erasure of %s that holds %s (%s)", name, path, _read_holder(path))
                    waited = True
                time.sleep(poll_s)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "holder": holder, "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(path: Path) -> str:
    try:
        record = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "holder unknown"
    if not record:
        return "holder unknown"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("since", 0)))
    return f"process {record.get('pid')} on {record.get('host')}, {record.get('holder') or 'a run'}, since {since}"
