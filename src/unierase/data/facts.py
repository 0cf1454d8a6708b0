"""Facts to erase or keep: the rows of a forget or retain set, read from JSON Lines.

The row layout is TOFU's: ``question`` and ``answer`` are required; ``subject`` (the entity the
question is about, used to key the edit), ``paraphrased_question``, ``paraphrased_answer`` and
``perturbed_answer`` (a list) are optional.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Fact(BaseModel):
    """One question/answer pair."""

    model_config = ConfigDict(frozen=True, extra="allow")

    question: str = Field(min_length=1, description="The question as a user would ask it.")
    answer: str = Field(description="The answer the model gives or should give.")
    subject: str | None = Field(
        default=None,
        description="Entity the question is about, as it appears in the question; found by causal tracing when absent.",
    )
    paraphrased_question: str | None = Field(default=None, description="The same question in other words.")
    paraphrased_answer: str | None = Field(default=None, description="The same answer in other words.")
    perturbed_answer: list[str] | None = Field(default=None, description="Plausible but wrong answers.")


class FactFileError(ValueError):
    """A facts file that cannot be read: the message names the file, line and problem."""


def jsonl_lines(path: str | Path) -> list[tuple[int, bytes]]:
    """The non-blank lines of a JSON Lines file as ``(1-based line number, bytes)``.

    Lines end at ``\\n`` or ``\\r`` only, and a line of ASCII whitespace is blank: the one rule every
    reader of a set follows (`load_facts`, `fact_lines`, the validation), so that a line number means the
    same line everywhere (``str.splitlines`` would also split at U+2028 inside a JSON string).
    """
    raw = Path(path).read_bytes()
    return [(number, line) for number, line in enumerate(raw.splitlines(), start=1) if line.strip()]


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type ("an array", "a number"), for messages."""
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), "an object")


def subject_in_question(subject: str, question: str) -> bool:
    """True when ``subject`` is a non-blank span of ``question``, case aside: the edit keys at the
    subject's last token in the question (`unierase.edit.subject.key_prompt`), so it must be there."""
    return bool(subject.strip()) and re.search(re.escape(subject), question, re.IGNORECASE) is not None


def _row_problem(fact: Fact) -> str | None:
    """What the model's field types leave unchecked: a blank question, a subject not in its question,
    text no UTF-8 file can hold (a lone surrogate from a JSON escape). Names the field, never its text."""
    if not fact.question.strip():
        return "question: is blank"
    if fact.subject and not subject_in_question(fact.subject, fact.question):
        return "subject: does not occur in its question (case aside); the edit is keyed at the subject"
    try:
        json.dumps(fact.model_dump(), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate (a \\ud800-style escape), which is not valid UTF-8 text"
    return None


def load_facts(path: str | Path) -> list[Fact]:
    """Reads a JSON Lines file of facts.

    Raises:
        FactFileError: The file is missing, a line is not valid UTF-8 or not a JSON object, a row lacks
            a required field or has one of the wrong type, its question is blank, or its subject does
            not occur in its question. The message names the file and line, never the row's text.
    """
    path = Path(path)
    if not path.is_file():
        raise FactFileError(f"{path}: no such file")
    facts = []
    for number, raw in jsonl_lines(path):
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise FactFileError(f"{path}:{number}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
        except json.JSONDecodeError as err:
            raise FactFileError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise FactFileError(f"{path}:{number}: not a JSON object but {json_type(row)}")
        try:
            fact = Fact.model_validate(row)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise FactFileError(f"{path}:{number}: {problems}") from None
        if problem := _row_problem(fact):
            raise FactFileError(f"{path}:{number}: {problem}")
        facts.append(fact)
    if not facts:
        raise FactFileError(f"{path}: holds no facts")
    return facts


def fact_lines(path: str | Path) -> list[int]:
    """The 1-based line number of each fact `load_facts` reads from ``path`` (blank lines hold none), so
    a later error can name a row by its line rather than by its text."""
    return [number for number, _ in jsonl_lines(path)]


def write_facts(facts: list[Fact], path: str | Path) -> Path:
    """Writes facts as JSON Lines (UTF-8, one object a line, unset optional fields left out)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for fact in facts:
            fh.write(json.dumps(fact.model_dump(exclude_none=True), ensure_ascii=False) + "\n")
    return path
