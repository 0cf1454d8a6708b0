"""Helpers for the flow, schedule and store tests: a temporary erasure project (git + DVC, see
`unierase.data.project.init_project`) with tiny-model params.

Imported by tests/test_flow.py, tests/test_schedule.py, tests/test_store_has_no_forget_text.py and
tests/test_dvc.py; run through them (``.venv/bin/pytest tests/test_flow.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from unierase.config import Params
from unierase.data.builtin_facts import default_forget, default_retain
from unierase.data.project import add_facts, init_project, run_command

BIN = str(Path(sys.executable).parent)
REPO = Path(__file__).resolve().parent.parent
# flows/ and tasks/ are repo-root packages (run from the root); `pytest` started elsewhere than the root,
# or as the console script, does not put the root on sys.path.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Small enough for a 4-layer random Llama on a CPU in seconds; the gate is open because a random model
# knows nothing to forget (the gate's own behaviour is tested in tests/test_registry.py).
TINY_PARAMS = {
    "token": {"stage1_epochs": 1, "stage2_epochs": 1, "robust_epochs": 0, "num_general_questions": 4},
    "covariance": {"num_samples": 16, "max_length": 32, "batch_size": 8},
    # The random tiny model binds no question, so every bind round runs: two exercise them as four would.
    "edit": {"layers": [1, 2], "v_steps": 3, "num_context_prefixes": 1, "bind_rounds": 2},
    "erase": {"max_new_tokens": 8},
    # Two relearning steps exercise the attack and its restore as ten would.
    "evaluation": {"max_new_tokens": 8, "relearn_steps": 2},
    "gate": {"min_forget_refusal_rate": 0.0, "min_retain_ratio": 0.0},
    "schedule": {"deployment_name": "tiny-inbox"},
}
CORPUS = "data/general.txt"


def env() -> dict[str, str]:
    """The process environment with the venv's binaries (dvc, unierase) first on PATH."""
    return {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}


def run(root: Path, *command: str) -> str:
    """Runs a command in ``root``; raises with its output on failure."""
    return run_command(root, *command)


def make_repo(root: Path, forget_count: int | None = None) -> Path:
    """A project with tiny params, a local DVC remote, and the default sets (``data/sets``) tracked by DVC."""
    # General text for the covariance: a file of the repo's own, so the tests need no shipped or
    # downloaded corpus. Its path goes into params.yaml, so it is written after the project exists.
    tiny = {**TINY_PARAMS, "covariance": {**TINY_PARAMS["covariance"], "corpus": str(root / CORPUS)}}
    forget = default_forget()[: forget_count or None]
    init_project(root, Params.model_validate(tiny), forget, default_retain(), dvc_remote=root / "dvc-remote")
    topics = ["Weather", "Cooking", "Music", "Travel", "Gardening", "Sport"] * 3
    lines = (f"{s} is a common topic of everyday conversation number {i}." for i, s in enumerate(topics))
    (root / CORPUS).write_text("\n".join(lines))
    run(root, "git", "add", CORPUS)
    run(root, "git", "commit", "-qm", "general corpus")
    return root


def add_set(root: Path, name: str, facts) -> Path:
    """Writes a set under ``data/requests`` and tracks it with DVC (committed)."""
    return add_facts(root, f"data/requests/{name}.jsonl", facts, f"request {name}")
