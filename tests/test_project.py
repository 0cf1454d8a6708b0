"""`unierase.data.project.init_project` in a real temporary git + DVC repo: the sets are DVC-tracked and
committed, params.yaml reads back, a non-empty folder is refused, a failing command is named.

    .venv/bin/pytest tests/test_project.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from unierase.config import Params, load_params
from unierase.data.builtin_facts import default_forget, default_retain
from unierase.data.facts import load_facts
from unierase.data.project import ProjectCommandError, add_facts, init_project, run_command


@pytest.fixture(scope="module")
def params() -> Params:
    return Params.model_validate({"edit": {"layers": [1, 2], "v_steps": 3}, "erase": {"max_new_tokens": 8}})


def test_init_project_tracks_the_sets_with_dvc(tmp_path: Path, params: Params) -> None:
    forget, retain = default_forget()[:3], default_retain()[:4]
    root = init_project(tmp_path / "project", params, forget, retain, dvc_remote=tmp_path / "remote")

    assert load_params(root / "params.yaml") == params
    assert load_facts(root / "data/sets/forget.jsonl") == forget
    assert load_facts(root / "data/sets/retain.jsonl") == retain
    for name in ("forget", "retain"):
        record = yaml.safe_load((root / f"data/sets/{name}.jsonl.dvc").read_text())
        assert record["outs"][0]["path"] == f"{name}.jsonl" and record["outs"][0]["md5"]
    committed = run_command(root, "git", "ls-files").split()
    assert {"params.yaml", "data/sets/forget.jsonl.dvc", "data/sets/retain.jsonl.dvc", ".dvc/config"} <= set(committed)
    assert "data/sets/forget.jsonl" not in committed  # the data is DVC's, only its record is in git
    assert run_command(root, "git", "status", "--porcelain") == ""

    run_command(root, "dvc", "push", "-q")
    assert any(p.is_file() for p in (tmp_path / "remote").rglob("*")), "the data went to the local remote"

    add_facts(root, "data/requests/more.jsonl", retain[:1], "a second request")
    assert "data/requests/more.jsonl.dvc" in run_command(root, "git", "ls-files")
    assert run_command(root, "git", "status", "--porcelain") == ""


def test_a_non_empty_folder_is_refused(tmp_path: Path, params: Params) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        init_project(tmp_path, params, default_forget()[:1], default_retain()[:1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing was started


def test_a_failing_command_is_named_with_its_output(tmp_path: Path) -> None:
    with pytest.raises(ProjectCommandError, match=r"(?s)`git rev-parse HEAD` failed .*not a git repository"):
        run_command(tmp_path, "git", "rev-parse", "HEAD")
