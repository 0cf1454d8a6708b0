"""Two erasure runs against the same registered model at once are serialised by the model's lock: the
second builds on the first's version, the parent tags form one chain, and no alias move is lost.

    .venv/bin/python -m pytest tests/test_concurrency.py
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from flow_repo import add_set
from flow_runs import flow_command, make_slim_repo, registry_state, start_flow, tail

from unierase.config import load_params
from unierase.data.builtin_facts import default_retain
from unierase.registry import tags as T
from unierase.registry.audit import read_audit
from unierase.registry.locking import RegistryBusyError, lock_path, registry_lock
from unierase.registry.promotion import current_alias_version
from unierase.registry.store import connect


def test_lock_waits_then_refuses_naming_the_holder(tmp_path: Path) -> None:
    with registry_lock(tmp_path, "unierase-m", timeout_s=5, holder="req-a"):
        with pytest.raises(RegistryBusyError, match=r"another erasure of unierase-m is running \(process \d+ .*req-a"):
            with registry_lock(tmp_path, "unierase-m", timeout_s=0.3):
                pass
        with registry_lock(tmp_path, "unierase-other", timeout_s=0.3):  # another model: no wait
            pass
    released = []

    def second() -> None:
        with registry_lock(tmp_path, "unierase-m", timeout_s=10):
            released.append(time.monotonic())

    with registry_lock(tmp_path, "unierase-m", timeout_s=5):
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.5)
        assert not released  # it waits while the lock is held
        held_until = time.monotonic()
    waiter.join(timeout=10)
    assert released and released[0] >= held_until


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    code = f"from unierase.registry.locking import registry_lock\nwith registry_lock({str(tmp_path)!r}, 'm', 5):\n"
    code += "    print('held', flush=True)\n    import time; time.sleep(60)\n"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RegistryBusyError):
            with registry_lock(tmp_path, "m", timeout_s=0.2):
                pass
        holder.kill()  # SIGKILL: the kernel drops the flock with the process
        holder.wait(timeout=10)
        with registry_lock(tmp_path, "m", timeout_s=2) as path:
            assert path == lock_path(tmp_path, "m")
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_two_runs_at_once_are_serialised(tmp_path: Path, tiny_llama_dir: Path, prefect_harness) -> None:
    root = make_slim_repo(tmp_path / "repo")
    add_set(root, "other-forget", default_retain()[5:7])
    commands = {
        "c-1": flow_command(root, tiny_llama_dir, "c-1"),
        "c-2": flow_command(root, tiny_llama_dir, "c-2", forget="data/requests/other-forget.jsonl"),
    }
    logs = {request: tmp_path / f"{request}.log" for request in commands}
    processes = {request: start_flow(command, logs[request]) for request, command in commands.items()}
    for request, process in processes.items():
        assert process.wait(timeout=900) == 0, f"{request} failed:\n{tail(logs[request])}"
    waited = [r for r in commands if "waiting for the erasure of" in logs[r].read_text(errors="replace")]
    assert len(waited) == 1, "exactly one run waited for the other's lock"

    state = registry_state(root)
    name = state["versions"][0][0]
    versions = {v: dict(tags) for _, v, _, tags in state["versions"]}
    first, second = sorted((tags[T.REQUEST_ID], v) for v, tags in versions.items() if tags[T.KIND] == T.ERASURE)
    assert sorted(versions) == ["1", "2", "3"]
    by_version = {v: r for r, v in (first, second)}
    # One chain: the run that waited builds on the version of the run that did not.
    assert versions["2"][T.PARENT_VERSION] == "1" and versions["3"][T.PARENT_VERSION] == "2"
    assert by_version["3"] == waited[0]
    client = connect(load_params(root / "params.yaml").registry, root)
    assert current_alias_version(client, name, "champion") == "3"
    moves = [(e["seq"], e["from_version"], e["to_version"]) for e in read_audit(client, name)]
    assert moves == [(1, None, "1"), (2, "1", "2"), (3, "2", "3")], "every alias move is in the audit log"
