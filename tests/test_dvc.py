"""The DVC pipeline in a temporary repo: ``dvc repro`` runs prepare and validate, ``dvc exp run -S``
sweeps a parameter, the data goes to the local remote, and provenance reads DVC's digests.

    .venv/bin/pytest tests/test_dvc.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from flow_repo import run

from unierase.data.provenance import dataset_digest
from unierase.digests import file_digests

REPO = Path(__file__).resolve().parent.parent


def _dvc_repo(root: Path) -> Path:
    root.mkdir()
    run(root, "git", "init", "-q")
    run(root, "git", "config", "user.email", "test@example.com")
    run(root, "git", "config", "user.name", "test")
    run(root, "dvc", "init", "-q")
    run(root, "dvc", "remote", "add", "-d", "local", str(root / "dvc-remote"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    (root / "src/unierase/data").mkdir(parents=True)
    for dep in ("builtin_facts.py", "validation.py"):  # the stages' code dependencies in dvc.yaml
        shutil.copy(REPO / "src/unierase/data" / dep, root / "src/unierase/data" / dep)
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "pipeline")
    return root


def test_repro_validate_push_and_sweep(tmp_path: Path, smollm2_dir: Path) -> None:
    root = _dvc_repo(tmp_path / "repo")
    run(root, "dvc", "repro", "validate")
    summary = json.loads((root / "outputs/validate/summary.json").read_text())
    assert summary["valid"] and summary["rows"]["forget"] >= 10
    assert (root / "outputs/validate/docs/index.html").is_file()

    lock = yaml.safe_load((root / "dvc.lock").read_text())
    forget = root / "data/sets/forget.jsonl"
    outs = {o["path"]: o["md5"] for o in lock["stages"]["prepare"]["outs"]}
    assert outs["data/sets/forget.jsonl"] == file_digests(forget, ("md5",))["md5"]
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "repro")
    digest = dataset_digest("forget", forget, root)
    assert digest.dvc_tracked and digest.dvc_rev == run(root, "git", "rev-parse", "HEAD").strip()

    run(root, "dvc", "push", "-q")
    assert any((root / "dvc-remote").rglob("*")), "the local remote holds the data"

    # A parameter sweep runs as a DVC experiment with the parameter set.
    out = run(root, "dvc", "exp", "run", "-S", "validation.max_set_size=1000000", "validate")
    assert "validate" in out
    table = run(root, "dvc", "exp", "show", "--json")
    assert "max_set_size" in table


def test_an_untracked_file_has_no_dvc_revision(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text('{"question": "q?", "answer": "a"}\n')
    digest = dataset_digest("forget", path, tmp_path)
    assert not digest.dvc_tracked and digest.dvc_rev is None and digest.path == "f.jsonl"
