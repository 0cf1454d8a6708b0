"""The private area: run folders are named and recorded, `unierase purge` removes them by age or by
request, keeps a run whose edit still waits to be registered, and refuses bad arguments.

    .venv/bin/python -m pytest tests/test_private_area.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from unierase.cli import main
from unierase.config import PrivacyConfig
from unierase.inputs import InputError
from unierase.stages.private import (
    DONE_MARK,
    PENDING_MARK,
    pending_registration,
    private_run_dir,
    purge_private,
    run_age_days,
    run_dirs,
)

DAY = 86400.0


def _run(root: Path, request: str, run_id: str, age_days: float, pending: bool = False) -> Path:
    run_dir = private_run_dir(root, PrivacyConfig(), request, run_id)
    record = json.loads((run_dir / "run.json").read_text())
    record["created_at"] = time.time() - age_days * DAY
    (run_dir / "run.json").write_text(json.dumps(record))
    (run_dir / "erase").mkdir()
    (run_dir / "erase" / "report.json").write_text('{"items": "per-item text"}')
    if pending:
        (run_dir / PENDING_MARK).write_text("{}")
    return run_dir


def test_run_folders_are_named_by_request_and_run(tmp_path: Path) -> None:
    run_dir = private_run_dir(tmp_path, PrivacyConfig(), "acme-42", "0123456789abcdef")
    assert run_dir == (tmp_path / "outputs/private/acme-42-01234567").resolve()
    assert json.loads((run_dir / "run.json").read_text())["request_id"] == "acme-42"
    assert run_age_days(run_dir) < 0.01
    with pytest.raises(InputError, match="request id '../x' is not allowed"):
        private_run_dir(tmp_path, PrivacyConfig(), "../x", "0123")


def test_purge_by_age_keeps_recent_and_pending_runs(tmp_path: Path) -> None:
    old = _run(tmp_path, "a", "11111111", age_days=40)
    recent = _run(tmp_path, "b", "22222222", age_days=2)
    waiting = _run(tmp_path, "c", "33333333", age_days=40, pending=True)
    result = purge_private(tmp_path, PrivacyConfig(retention_days=30))
    assert result.removed == [old] and result.kept_pending == [waiting]
    assert not old.exists() and recent.exists() and waiting.exists()
    (waiting / DONE_MARK).write_text("{}")  # registered since: no longer pending
    assert not pending_registration(waiting)
    assert purge_private(tmp_path, PrivacyConfig(), older_than_days=0).removed == [recent, waiting]


def test_purge_by_request_removes_all_its_runs(tmp_path: Path) -> None:
    first, second = _run(tmp_path, "acme-1", "11111111", 0), _run(tmp_path, "acme-1", "22222222", 0, pending=True)
    other = _run(tmp_path, "acme-10", "33333333", 0)
    assert run_dirs(tmp_path, PrivacyConfig(), "acme-1") == [first, second]
    assert purge_private(tmp_path, PrivacyConfig(), request_id="acme-1").removed == [first, second]
    assert run_dirs(tmp_path, PrivacyConfig()) == [other]


def test_no_retention_needs_an_age_or_a_request(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="retention_days is None"):
        purge_private(tmp_path, PrivacyConfig(retention_days=None))


def test_purge_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"privacy": {"retention_days": 7}}))
    old, recent = _run(tmp_path, "a", "11111111", 10), _run(tmp_path, "b", "22222222", 1)
    assert main(["purge", "--root", str(tmp_path)]) == 0
    assert f"removed {old}" in capsys.readouterr().out and not old.exists() and recent.exists()
    assert main(["purge", "--root", str(tmp_path), "--request", "b"]) == 0 and not recent.exists()
    assert main(["purge", "--root", str(tmp_path), "--older-than", "-2"]) == 2
    assert "--older-than -2: give a number of days" in capsys.readouterr().err
