"""The Great Expectations suite on forget and retain sets names every broken row and writes Data Docs.

.venv/bin/pytest tests/test_validation.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unierase.config import ValidationConfig
from unierase.data.builtin_facts import default_forget, default_retain
from unierase.data.facts import write_facts
from unierase.data.validation import ExpectationFailure, normalize_question, validate_sets


def _write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _row(question: str, answer: str = "An answer.") -> bytes:
    return json.dumps({"question": question, "answer": answer}).encode()


def _failed(result, set_name: str) -> dict[str, ExpectationFailure]:
    return {f"{f.expectation}:{f.column}": f for f in result.failures if f.set_name == set_name}


@pytest.fixture(scope="module")
def good_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sets")
    return write_facts(default_forget(), root / "forget.jsonl"), write_facts(default_retain(), root / "retain.jsonl")


def test_builtin_sets_pass_with_the_models_tokenizer(good_sets, smollm2_dir: Path, tmp_path: Path) -> None:
    result = validate_sets(*good_sets, ValidationConfig(), model_dir=smollm2_dir, docs_dir=tmp_path / "docs")
    assert result.success, result.message()
    assert result.row_counts == {"forget": len(default_forget()), "retain": len(default_retain())}
    assert result.docs_index == tmp_path / "docs" / "index.html" and result.docs_index.is_file()


def test_every_broken_row_is_named_by_line(tmp_path: Path) -> None:
    forget = _write_lines(
        tmp_path / "forget.jsonl",
        [
            _row("Where is the Eiffel Tower?"),  # 1: also in retain, modulo case and spaces
            _row("  where is the   EIFFEL tower? "),  # 2: duplicate of 1 after normalising
            _row("   "),  # 3: blank question
            json.dumps({"answer": "no question"}).encode(),  # 4: missing question
            b"not json at all",  # 5
            b'{"question": "caf\xe9?", "answer": "x"}',  # 6: Latin-1, not UTF-8
            json.dumps({"question": "lone \ud800 surrogate", "answer": "x"}).encode(),  # 7: not encodable
            json.dumps({"question": "q?", "answer": None}).encode(),  # 8: null answer
        ],
    )
    retain = _write_lines(tmp_path / "retain.jsonl", [_row("Where is the Eiffel tower?"), _row("Capital of Italy?")])
    result = validate_sets(forget, retain, ValidationConfig(max_set_size=100), docs_dir=tmp_path / "docs")

    assert not result.success
    failed = _failed(result, "forget")
    assert failed["expect_column_values_to_not_be_in_set:_question_digest"].lines == [1, 2]
    assert failed["expect_column_values_to_be_unique:_question_digest"].lines == [1, 2]
    assert failed["expect_column_values_to_match_regex:question"].lines == [3]
    assert failed["expect_column_values_to_not_be_null:question"].lines == [4, 5]
    assert failed["expect_column_values_to_be_in_set:_valid_json"].lines == [5]
    assert failed["expect_column_values_to_be_in_set:_valid_utf8"].lines == [6, 7]
    assert failed["expect_column_values_to_not_be_null:answer"].lines == [5, 8]
    assert _failed(result, "retain")["expect_column_values_to_not_be_in_set:_question_digest"].lines == [1]
    message = result.message()
    assert "forget: expect_column_values_to_be_unique(_question_digest) [questions must be unique" in message
    assert "failed on line(s) 1, 2" in message
    assert str(tmp_path / "docs" / "index.html") in message
    assert (tmp_path / "docs" / "index.html").is_file()
    # The Data Docs show the values that broke an expectation: digests and flags, never the questions.
    docs = b"".join(p.read_bytes() for p in (tmp_path / "docs").rglob("*.html"))
    assert b"eiffel" not in docs.lower() and b"capital of italy" not in docs.lower()


def test_size_bound_and_context_length(tmp_path: Path) -> None:
    forget = _write_lines(tmp_path / "forget.jsonl", [_row(f"Question {i}?") for i in range(5)] + [_row("x" * 300)])
    result = validate_sets(forget, None, ValidationConfig(max_set_size=4, max_tokens=64), docs_dir=tmp_path / "d")
    failed = _failed(result, "forget")
    assert failed["expect_table_row_count_to_be_between:None"].observed == "6"
    assert failed["expect_column_values_to_be_between:_num_tokens"].lines == [6]


def test_empty_set_fails(tmp_path: Path) -> None:
    forget = _write_lines(tmp_path / "forget.jsonl", [b""])
    result = validate_sets(forget, None, ValidationConfig(), docs_dir=tmp_path / "d")
    assert not result.success
    assert "expect_table_row_count_to_be_between" in result.message()


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        validate_sets(tmp_path / "nope.jsonl", None, ValidationConfig(), docs_dir=tmp_path / "d")


def test_normalize_question() -> None:
    assert normalize_question("  What IS\tthe  Capital? ") == normalize_question("what is the capital?")
