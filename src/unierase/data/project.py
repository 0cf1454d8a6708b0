"""A new erasure project: a git repo with DVC, ``params.yaml`` and the forget and retain sets tracked by DVC.

This is the layout the erasure flow reads (``data/sets/forget.jsonl``, ``data/sets/retain.jsonl``, their
``.dvc`` records committed), so every model version it registers can name the data commit it came from.

    from unierase.data.project import init_project
    init_project(Path("my-erasure"), load_params("params.yaml"), forget, retain, dvc_remote=Path("/srv/dvc"))

git must be on ``PATH``; ``dvc`` is looked up in the running Python environment first (it is installed
with this package), then on ``PATH``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import yaml

from unierase.config import Params
from unierase.data.facts import Fact, write_facts

logger = logging.getLogger(__name__)

FORGET_PATH = "data/sets/forget.jsonl"
RETAIN_PATH = "data/sets/retain.jsonl"
# Used only where git has no identity of its own (a fresh container or CI): a commit needs one.
FALLBACK_IDENTITY = {"user.name": "unierase", "user.email": "unierase@localhost"}


class ProjectCommandError(RuntimeError):
    """A git or DVC command failed while setting up or changing a project; the message holds its output."""


def _environment() -> dict[str, str]:
    """The process environment with this Python's scripts folder (``dvc``) first on ``PATH``."""
    scripts = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": scripts + os.pathsep + os.environ.get("PATH", "")}


def run_command(root: Path, *command: str) -> str:
    """Runs a command (git, dvc) in ``root`` and returns its standard output.

    Raises:
        ProjectCommandError: The command is missing or exits non-zero; the message names the command,
            the folder and what it printed.
    """
    try:
        done = subprocess.run(command, cwd=root, env=_environment(), capture_output=True, text=True)
    except FileNotFoundError as err:
        raise ProjectCommandError(f"{command[0]} not found on PATH (needed for `{' '.join(command)}`)") from err
    if done.returncode != 0:
        raise ProjectCommandError(
            f"`{' '.join(command)}` failed in {root} (exit {done.returncode}):\n{done.stdout}{done.stderr}".rstrip()
        )
    return done.stdout


def _ensure_git_identity(root: Path) -> None:
    for key, value in FALLBACK_IDENTITY.items():
        try:
            run_command(root, "git", "config", key)
        except ProjectCommandError:  # unset: `git config KEY` exits 1
            run_command(root, "git", "config", key, value)


def add_facts(root: Path, relative_path: str, facts: list[Fact], message: str) -> Path:
    """Writes a facts file inside the project, tracks it with DVC and commits its ``.dvc`` record.

    Args:
        root: The project (see `init_project`).
        relative_path: Where the file goes, relative to ``root`` (``data/requests/acme.jsonl``).
        facts: The rows to write.
        message: The commit message.

    Returns:
        The written file.
    """
    path = write_facts(facts, root / relative_path)
    run_command(root, "dvc", "add", "-q", relative_path)
    run_command(root, "git", "add", "-A")
    run_command(root, "git", "commit", "-qm", message)
    return path


def init_project(
    root: Path,
    params: Params,
    forget: list[Fact],
    retain: list[Fact],
    dvc_remote: Path | None = None,
) -> Path:
    """Creates an erasure project: git and DVC initialised, ``params.yaml`` written, the forget and retain
    sets written to ``data/sets`` and tracked by DVC, all in one commit.

    Args:
        root: An empty or missing folder (created).
        params: Written as ``params.yaml`` (every field, so the file documents the run's settings).
        forget: The facts to erase.
        retain: The facts to keep.
        dvc_remote: A local folder made the default DVC remote (``dvc push`` stores the data there);
            None leaves the project without a remote.

    Returns:
        ``root``.

    Raises:
        FileExistsError: ``root`` exists and is not an empty folder.
        ProjectCommandError: git or dvc is missing or fails.
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} is not an empty folder; a project starts in an empty or new one")
    root.mkdir(parents=True, exist_ok=True)
    run_command(root, "git", "init", "-q")
    _ensure_git_identity(root)
    run_command(root, "dvc", "init", "-q")
    if dvc_remote is not None:
        run_command(root, "dvc", "remote", "add", "-d", "local", str(Path(dvc_remote).resolve()))
    params_yaml = yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)
    (root / "params.yaml").write_text(params_yaml, encoding="utf-8")
    write_facts(forget, root / FORGET_PATH)
    write_facts(retain, root / RETAIN_PATH)
    run_command(root, "dvc", "add", "-q", FORGET_PATH, RETAIN_PATH)
    run_command(root, "git", "add", "-A")
    run_command(root, "git", "commit", "-qm", "Erasure project: params.yaml, forget and retain sets (DVC)")
    logger.info("erasure project initialised in %s", root)
    return root
