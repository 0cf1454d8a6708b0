"""Where a run's inputs came from: git commit, DVC digests and revision of its data, config hash.

"Which data and code produced model version N?" is answered by these values, stored as
``unierase.*`` tags on the version. Digests are DVC's (MD5 of the file, as in a ``.dvc`` file or
``dvc.lock``) plus a SHA-256; the data's revision is the last git commit that changed its DVC record.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from unierase.digests import file_digests

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetDigest:
    """The identity of one data file.

    Attributes:
        name: Role of the file in the run (``forget``, ``retain``).
        path: Path relative to the repo root (or absolute when outside it).
        md5: MD5 of the file, the digest DVC tracks it by.
        sha256: SHA-256 of the file.
        dvc_tracked: True when a ``.dvc`` file or ``dvc.lock`` records this exact content.
        dvc_rev: Last git commit that changed the DVC record of the file, or None.
    """

    name: str
    path: str
    md5: str
    sha256: str
    dvc_tracked: bool
    dvc_rev: str | None


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def git_commit(root: Path) -> str | None:
    """HEAD commit of the repository at ``root`` (None outside git), suffixed ``-dirty`` with local changes
    to tracked files."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit and _git(root, "status", "--porcelain", "--untracked-files=no"):
        commit += "-dirty"
    return commit


def _dvc_records(root: Path, path: Path) -> list[tuple[Path, str]]:
    """(record file, md5) pairs that DVC keeps for ``path``: its ``.dvc`` file and any ``dvc.lock`` out."""
    records = []
    dvc_file = path.with_name(path.name + ".dvc")
    if dvc_file.is_file():
        for out in (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", []):
            if (dvc_file.parent / out.get("path", "")).resolve() == path.resolve():
                records.append((dvc_file, str(out.get("md5"))))
    lock = root / "dvc.lock"
    if lock.is_file():
        for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
            for out in stage.get("outs", []):
                if (root / out.get("path", "")).resolve() == path.resolve():
                    records.append((lock, str(out.get("md5"))))
    return records


def dataset_digest(name: str, path: Path, root: Path) -> DatasetDigest:
    """Digests of one data file and, when DVC tracks that exact content, the git revision of its record."""
    path = Path(path).resolve()
    root = Path(root).resolve()
    digests = file_digests(path, ("md5", "sha256"))
    md5, sha = digests["md5"], digests["sha256"]
    matching = [record for record, digest in _dvc_records(root, path) if digest == md5]
    rev = None
    if matching:
        rev = _git(root, "log", "-1", "--format=%H", "--", str(matching[0].relative_to(root)))
    rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    return DatasetDigest(name=name, path=rel, md5=md5, sha256=sha, dvc_tracked=bool(matching), dvc_rev=rev)


def dataset_tags(digests: list[DatasetDigest]) -> dict[str, str]:
    """The ``unierase.data.*`` tags recording a run's data files by digest, path and DVC revision (no content)."""
    tags = {}
    for d in digests:
        tags[f"unierase.data.{d.name}.md5"] = d.md5
        tags[f"unierase.data.{d.name}.sha256"] = d.sha256
        tags[f"unierase.data.{d.name}.path"] = d.path
        tags[f"unierase.data.{d.name}.dvc_rev"] = d.dvc_rev or "untracked"
    return tags


def as_dict(digest: DatasetDigest) -> dict:
    """A JSON-ready dict of a digest (for task results and reports)."""
    return asdict(digest)
