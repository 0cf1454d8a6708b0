"""The built-in preserved corpus (`scripts/make_builtin_corpus.py`): it names people, so that the preserved
statistics hold the keys read where a name is written, and none of them is one the evaluation asks about.

.venv/bin/pytest tests/test_builtin_corpus.py -q
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from unierase.data.corpus import builtin_corpus_path

ROOT = Path(__file__).resolve().parents[1]
TOFU = ROOT / ".." / "shared" / "tofu"


def _script():
    spec = importlib.util.spec_from_file_location("make_builtin_corpus", ROOT / "scripts" / "make_builtin_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _corpus_text() -> str:
    return " ".join(json.loads(line)["text"] for line in builtin_corpus_path().read_text().splitlines() if line.strip())


def _tofu_rows(*names: str) -> list[dict]:
    return [json.loads(line) for name in names for line in (TOFU / name).read_text().splitlines() if line.strip()]


def _names_surname(text: str, person: str) -> bool:
    """Whether lower-cased ``text`` holds ``person``'s surname as a whole word."""
    return re.search(rf"\b{re.escape(person.split()[-1].lower())}\b", text) is not None


def test_the_corpus_writes_about_the_scripts_people():
    text = _corpus_text().lower()
    people = _script().PEOPLE
    named = [p for p in people if _names_surname(text, p)]
    assert len(named) == len(people), sorted(set(people) - set(named))


@pytest.mark.skipif(not TOFU.is_dir(), reason="../shared/tofu is not present")
def test_no_person_of_the_corpus_is_one_the_general_evaluation_asks_about():
    rows = _tofu_rows("real_authors_perturbed.jsonl", "world_facts_perturbed.jsonl")
    asked = " ".join(" ".join(str(v) for v in row.values()) for row in rows).lower()
    shared = [p for p in _script().PEOPLE if _names_surname(asked, p)]
    assert not shared
    text = _corpus_text().lower()
    authors = {row["answer"].strip().rstrip(".") for row in _tofu_rows("real_authors.jsonl")}
    written = sorted(a for a in authors if len(a.split()) > 1 and a.lower() in text)
    assert not written  # no real author's full name occurs in the preserved text
