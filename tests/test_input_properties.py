"""Property-based tests (hypothesis) of the readers and the validation's rules: whatever bytes a set
holds, the readers never crash, number lines alike and name the file and line of a bad row; the reader
of a run (`load_facts`) and the suite's row rules accept exactly the same rows; the checks of names
and numbers accept only what MLflow, a file system and Prefect accept. No model, no Great Expectations
run: each example takes microseconds.

    .venv/bin/python -m pytest tests/test_input_properties.py
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from unierase.config import PrivacyConfig
from unierase.data.facts import FactFileError, fact_lines, jsonl_lines, load_facts
from unierase.data.validation import (
    SUBJECT_IN_QUESTION,
    VALID_JSON,
    normalize_question,
    question_digest,
    read_rows,
    row_flags,
)
from unierase.inputs import InputError, check_model_name, check_request_id, check_version
from unierase.stages.private import private_root, private_run_dir

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values a row's fields take in the wild: text (spaces, case, non-ASCII, lone surrogates), numbers,
# booleans, null, lists.
text = st.one_of(st.text(max_size=12), st.text(alphabet=st.characters(exclude_categories=()), max_size=4))
values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), text, st.lists(st.text(max_size=3), max_size=2))
rows = st.dictionaries(st.sampled_from(["question", "answer", "subject", "source"]), values, max_size=4)
# Lines of a file: raw bytes (broken UTF-8, broken JSON, blanks) or a JSON row.
lines = st.lists(
    st.one_of(
        st.binary(max_size=24),
        rows.map(lambda r: json.dumps(r).encode()),
        st.sampled_from([b"", b"   ", b"[1, 2]", b"null", b'"text"', b"{}", b"\xef\xbb\xbf{}"]),
    ),
    max_size=6,
)


def _file(content: bytes) -> Path:
    handle = tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False)
    handle.write(content)
    handle.close()
    return Path(handle.name)


@FAST
@given(lines)
def test_readers_number_the_same_lines(raw: list[bytes]) -> None:
    path = _file(b"\n".join(raw))
    rows_read = read_rows(path)
    numbers = [n for n, _ in jsonl_lines(path)]
    assert [r["_line"] for r in rows_read] == numbers == fact_lines(path)
    for row, (_, line) in zip(rows_read, jsonl_lines(path), strict=True):
        try:
            parsed = json.loads(line.decode("utf-8", "replace"))
        except ValueError:
            parsed = None
        assert row[VALID_JSON] == isinstance(parsed, dict)


@FAST
@given(lines)
def test_load_facts_returns_facts_or_names_the_file_and_line(raw: list[bytes]) -> None:
    path = _file(b"\n".join(raw))
    try:
        facts = load_facts(path)
    except FactFileError as err:
        message = str(err)
        assert message.startswith(str(path))
        located = re.match(re.escape(str(path)) + r":(\d+): ", message)
        assert located or message == f"{path}: holds no facts"
        if located:
            assert int(located.group(1)) in fact_lines(path)
    else:
        assert facts and all(isinstance(f.question, str) and f.question.strip() for f in facts)
        assert all(isinstance(f.answer, str) for f in facts)


def _suite_accepts(row: dict) -> bool:
    """The suite's row-level rules on one row: required fields present and non-null, a non-blank
    question, question and answer strings, a subject in its question, text that UTF-8 can hold."""
    question, answer = row.get("question"), row.get("answer")
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    if question is None or answer is None or not all(row_flags(row).values()):
        return False
    return re.search(r"\S", question) is not None


@FAST
@given(rows)
@example({"question": 5, "answer": "Paris"})
@example({"question": "What is the capital of France?", "answer": "Paris", "subject": "Germany"})
@example({"question": "What is the capital of France?", "answer": "Paris", "subject": "FRANCE"})
@example({"question": "Lone \ud800 surrogate?", "answer": "x"})
@example({"question": "\u2003", "answer": "x"})
def test_load_facts_and_the_suite_accept_the_same_rows(row: dict) -> None:
    path = _file(json.dumps(row).encode() + b"\n")
    try:
        load_facts(path)
        accepted = True
    except FactFileError as err:
        accepted = False
        for field in ("question", "answer", "subject"):  # the message names the line, never the text
            if isinstance(row.get(field), str) and len(row[field].strip()) > 3:
                assert row[field] not in str(err).split(":1: ", 1)[-1]
    assert accepted == _suite_accepts(row), row


@FAST
@given(st.text(max_size=30), st.integers(0, 30), st.integers(1, 6))
def test_a_span_of_the_question_is_its_subject(question: str, start: int, length: int) -> None:
    span = question[start : start + length]
    flags = row_flags({"question": question, "answer": "a", "subject": span})
    assert flags[SUBJECT_IN_QUESTION] == (span == "" or bool(span.strip()))  # "" counts as no subject
    if span.strip() and span.isascii():
        assert row_flags({"question": question, "answer": "a", "subject": span.swapcase()})[SUBJECT_IN_QUESTION]
    assert not row_flags({"question": question, "answer": "a", "subject": question + "!"})[SUBJECT_IN_QUESTION]


@FAST
@given(st.text(max_size=40))
def test_question_identity_ignores_spacing(question: str) -> None:
    spaced = "  " + re.sub(r"\s+", "   ", question) + "\t"
    assert normalize_question(normalize_question(question)) == normalize_question(question)
    assert question_digest(spaced) == question_digest(question)
    assert re.fullmatch(r"[0-9a-f]{16}", question_digest(question))


@FAST
@given(st.text(max_size=140))
def test_accepted_request_ids_are_safe_folder_names(request_id: str) -> None:
    try:
        check_request_id(request_id)
    except InputError:
        return
    assert "/" not in request_id and "\\" not in request_id and request_id not in (".", "..")
    assert Path(request_id).name == request_id and request_id == request_id.strip()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = private_run_dir(tmp, PrivacyConfig(), request_id, "0123456789")
        assert run_dir.parent == private_root(tmp, PrivacyConfig())  # never outside the private area


@FAST
@given(st.one_of(st.text(max_size=20), st.from_regex(r"[A-Za-z0-9._/:-]{1,12}", fullmatch=True)))
def test_model_name_check_agrees_with_mlflow(name: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(name)
        mlflow_accepts = True
    except MlflowException:
        mlflow_accepts = False
    try:
        check_model_name(name)
        ours = True
    except InputError:
        ours = False
    assert ours == mlflow_accepts, name


@FAST
@given(st.one_of(st.integers(-3, 10**6), st.text(max_size=6)))
def test_version_numbers(value: int | str) -> None:
    try:
        version = check_version(value)
    except InputError:
        assert not (isinstance(value, int) and value >= 1)
        return
    assert int(version) >= 1 and str(int(version)) == version


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 70), st.integers(0, 30))
def test_cron_minutes_and_hours(minute: int, hour: int) -> None:
    from unierase.inputs import check_cron

    cron = f"{minute} {hour} * * *"
    if minute < 60 and hour < 24:
        assert check_cron(cron) == cron
    else:
        with pytest.raises(InputError, match="is not a cron string"):
            check_cron(cron)
