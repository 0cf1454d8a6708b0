"""After erasures, the forget text (every question, answer and subject) is nowhere but in the data it came
from and the private area: not in the MLflow store (database and artifacts), Prefect's database and
result storage, the logs at every level, the Data Docs, the flow's other outputs or an exported model
directory. A kept run's text is in the private area until `unierase purge` removes it, and a run with
``privacy.purge_after_registration`` leaves none there.

.venv/bin/pytest tests/test_store_has_no_forget_text.py
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from flow_repo import add_set, make_repo

from flows.erasure import erasure_flow
from unierase.cli import main as unierase_main
from unierase.config import load_params
from unierase.data.builtin_facts import default_forget, default_retain
from unierase.data.facts import load_facts
from unierase.registry.pyfunc import export_model_dir
from unierase.stages.private import private_root, run_dirs

# A model's vocabulary holds every word-piece, so a one-word subject ("France") is in any tokenizer
# file: subjects are not searched there (the questions and answers, sentences, still are).
VOCABULARY = {"tokenizer.json", "vocab.json", "merges.txt"}
# What the project keeps of the request on purpose: the data itself (DVC-tracked), DVC's cache and
# remote, git's objects; and the private area, checked on its own below.
DATA = ("data", ".dvc", "dvc-remote", ".git")


def _forms(text: str) -> set[bytes]:
    """A text as UTF-8, as UTF-16 (some stores) and JSON-escaped (non-ASCII written as \\uXXXX)."""
    return {text.encode(), text.encode("utf-16-le"), json.dumps(text)[1:-1].encode()}


def _needles(paths: list[Path]) -> tuple[set[bytes], set[bytes]]:
    """Every question and answer of the forget sets; every subject (searched outside vocabularies)."""
    facts = [fact for path in paths for fact in load_facts(path)]
    texts = {form for f in facts for t in (f.question, f.answer) for form in _forms(t)}
    subjects = {form for f in facts if f.subject for form in _forms(f.subject)}
    return texts, subjects


def _leaks(files: list[Path], texts: set[bytes], subjects: set[bytes]) -> list[tuple[str, str]]:
    found = []
    for path in files:
        data = path.read_bytes()
        needles = texts if path.name in VOCABULARY else texts | subjects
        found += [(str(path), n.decode("utf-8", "replace")) for n in needles if n in data]
    return found


def _files(folder: Path, skip: tuple[Path, ...] = ()) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not any(p.is_relative_to(s) for s in skip)]


class _Records(logging.Handler):
    """Every log record, formatted with its arguments, at every level."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(f"{record.name} {record.levelname} {record.getMessage()} {record.exc_text or ''}")
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is kept as its template
            self.lines.append(str(record.msg))


@pytest.fixture
def debug_logs():
    """Captures the records of every logger (root, Prefect's own, the libraries') at DEBUG."""
    handler = _Records()
    loggers = [logging.getLogger(), logging.getLogger("prefect"), logging.getLogger("unierase")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield handler
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


def test_forget_text_is_only_in_the_data_and_the_private_area(
    tmp_path: Path, tiny_llama_dir: Path, prefect_harness, debug_logs: _Records, capfd: pytest.CaptureFixture
) -> None:
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, PREFECT_SERVER_DATABASE_CONNECTION_URL

    root = make_repo(tmp_path / "repo", forget_count=4)
    second = add_set(root, "second-forget", default_retain()[:2])
    first = erasure_flow(request_id="s-1", base_model=tiny_llama_dir, root=root)
    # The second run purges its private folder as soon as its version is registered.
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["privacy"] = {**raw.get("privacy", {}), "purge_after_registration": True}
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    erasure_flow(forget=second, request_id="s-2", base_model=tiny_llama_dir, root=root)
    out, err = capfd.readouterr()

    texts, subjects = _needles([root / "data/sets/forget.jsonl", second])
    assert len(texts) >= 24 and len(subjects) >= 6
    privacy = load_params(root / "params.yaml").privacy
    private = private_root(root, privacy)
    export = export_model_dir(f"models:/{first['registered_model']}@champion", tmp_path / "export")
    prefect_db = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split(":///", 1)[1])
    results = Path(PREFECT_LOCAL_STORAGE_PATH.value())
    stores = {
        "MLflow store": _files(root / "mlflow"),
        "Prefect database": _files(prefect_db.parent),
        "Prefect result storage": _files(results) if results.is_dir() else [],
        "Data Docs": _files(root / load_params(root / "params.yaml").validation.docs_dir),
        "project (outside the data and the private area)": _files(root, tuple(root / d for d in DATA) + (private,)),
        "exported model": _files(export),
    }
    assert len(stores["MLflow store"]) > 10 and stores["Prefect database"] and stores["Data Docs"]
    for store, files in stores.items():
        assert not (leaks := _leaks(files, texts, subjects)), f"forget text in the {store}: {leaks[:10]}"
    logs = "\n".join(debug_logs.lines).encode() + out.encode() + err.encode()
    assert len(debug_logs.lines) > 100, "the handler saw the runs' logs"
    assert not [n for n in texts | subjects if n in logs], "forget text in the logs"

    # The one place it is: the first run's private folder; the second run purged its own.
    kept = run_dirs(root, privacy, "s-1")
    assert len(kept) == 1 and _leaks(_files(kept[0]), texts, set())
    assert run_dirs(root, privacy, "s-2") == []
    assert unierase_main(["purge", "--request", "s-1", "--root", str(root)]) == 0
    assert run_dirs(root, privacy) == [] and not _leaks(_files(private), texts, subjects)
    # The search itself works: the same needles are found in the data they came from.
    assert _leaks([root / "data/sets/forget.jsonl"], texts, subjects)


def test_default_sets_are_disjoint() -> None:
    questions = {f.question for f in default_forget()}
    assert not questions & {f.question for f in default_retain()}
