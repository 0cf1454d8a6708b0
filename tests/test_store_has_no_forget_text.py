"""After erasures, neither the MLflow database nor any artifact holds a forget-set question or answer.

.venv/bin/pytest tests/test_store_has_no_forget_text.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
from flow_repo import add_set, make_repo

from flows.erasure import erasure_flow
from unierase.data.builtin_facts import default_forget, default_retain
from unierase.data.facts import load_facts


def _needles(paths: list[Path]) -> set[bytes]:
    """Every question and answer of the forget sets, as UTF-8 and as JSON-escaped text."""
    texts = {t for path in paths for fact in load_facts(path) for t in (fact.question, fact.answer)}
    return {t.encode() for t in texts} | {t.encode("utf-16-le") for t in texts}


def test_mlflow_store_holds_no_forget_text(tmp_path: Path, tiny_llama_dir: Path, prefect_harness) -> None:
    root = make_repo(tmp_path / "repo", forget_count=4)
    second = add_set(root, "second-forget", default_retain()[:2])
    erasure_flow(request_id="s-1", base_model=tiny_llama_dir, root=root)
    erasure_flow(forget=second, request_id="s-2", base_model=tiny_llama_dir, root=root)

    needles = _needles([root / "data/sets/forget.jsonl", second])
    assert len(needles) >= 12
    store = [root / "mlflow/mlflow.db", *(p for p in (root / "mlflow/artifacts").rglob("*") if p.is_file())]
    assert len(store) > 10, "the store should hold the registered versions"
    found = {
        (str(p.relative_to(root)), n.decode("utf-8", "replace")) for p in store for n in needles if n in p.read_bytes()
    }
    assert not found, f"forget-set text in the MLflow store: {sorted(found)[:10]}"
    # The search itself works: the same needles are found in the data they came from.
    assert any(n in (root / "data/sets/forget.jsonl").read_bytes() for n in needles)


def test_default_sets_are_disjoint() -> None:
    questions = {f.question for f in default_forget()}
    assert not questions & {f.question for f in default_retain()}
    pytest.importorskip("unierase.data.validation")
