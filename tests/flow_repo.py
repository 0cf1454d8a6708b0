"""Helpers for the flow, schedule and store tests: a temporary git + DVC repo with tiny-model params.

Imported by tests/test_flow.py, tests/test_schedule.py and tests/test_store_has_no_forget_text.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from unierase.config import Params
from unierase.data.builtin_facts import default_forget, default_retain
from unierase.data.facts import write_facts

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
    "edit": {"layers": [1, 2], "v_steps": 3, "num_context_prefixes": 1},
    "erase": {"max_new_tokens": 8},
    "gate": {"min_forget_refusal_rate": 0.0, "min_retain_ratio": 0.0},
    "schedule": {"deployment_name": "tiny-inbox"},
}


def env() -> dict[str, str]:
    """The process environment with the venv's binaries (dvc, unierase) first on PATH."""
    return {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}


def run(root: Path, *command: str) -> str:
    """Runs a command in ``root``; raises with its output on failure."""
    done = subprocess.run(command, cwd=root, env=env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def make_repo(root: Path, forget_count: int | None = None) -> Path:
    """A git repo with DVC, tiny params, and the default sets (``data/sets``) tracked by DVC."""
    root.mkdir(parents=True, exist_ok=True)
    run(root, "git", "init", "-q")
    run(root, "git", "config", "user.email", "test@example.com")
    run(root, "git", "config", "user.name", "test")
    run(root, "dvc", "init", "-q")
    run(root, "dvc", "remote", "add", "-d", "local", str(root / "dvc-remote"))
    # General text for the covariance: a local file, so the tests need no shipped or downloaded corpus.
    corpus = root / "data/general.txt"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    corpus.write_text(
        "\n".join(
            f"{s} is a common topic of everyday conversation number {i}."
            for i, s in enumerate(["Weather", "Cooking", "Music", "Travel", "Gardening", "Sport"] * 3)
        )
    )
    tiny = {**TINY_PARAMS, "covariance": {**TINY_PARAMS["covariance"], "corpus": str(corpus)}}
    params = Params.model_validate(tiny).model_dump(mode="json")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    forget = default_forget()[: forget_count or None]
    write_facts(forget, root / "data/sets/forget.jsonl")
    write_facts(default_retain(), root / "data/sets/retain.jsonl")
    run(root, "dvc", "add", "-q", "data/sets/forget.jsonl", "data/sets/retain.jsonl")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "data")
    return root


def add_set(root: Path, name: str, facts) -> Path:
    """Writes a set under ``data/requests`` and tracks it with DVC (committed)."""
    path = write_facts(facts, root / "data/requests" / f"{name}.jsonl")
    run(root, "dvc", "add", "-q", str(path.relative_to(root)))
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", f"request {name}")
    return path


def copy_tree(src: Path, dst: Path) -> Path:
    """Copies a directory (a fixture model) into place."""
    shutil.copytree(src, dst)
    return dst
