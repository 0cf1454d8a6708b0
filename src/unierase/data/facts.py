"""Facts to erase or keep: the rows of a forget or retain set, read from JSON Lines.

The row layout is TOFU's: ``question`` and ``answer`` are required; ``subject`` (the entity the
question is about, used to key the edit), ``paraphrased_question``, ``paraphrased_answer`` and
``perturbed_answer`` (a list) are optional.
"""

from __future__ import annotations

import json
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


def load_facts(path: str | Path) -> list[Fact]:
    """Reads a JSON Lines file of facts.

    Raises:
        FactFileError: The file is missing, not valid UTF-8 or JSON, or a row lacks a required field.
    """
    path = Path(path)
    if not path.is_file():
        raise FactFileError(f"{path}: no such file")
    facts = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise FactFileError(f"{path}: not valid UTF-8 ({err})") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise FactFileError(f"{path}:{number}: not valid JSON ({err.msg})") from err
        try:
            facts.append(Fact.model_validate(row))
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise FactFileError(f"{path}:{number}: {problems}") from err
    if not facts:
        raise FactFileError(f"{path}: holds no facts")
    return facts


def write_facts(facts: list[Fact], path: str | Path) -> Path:
    """Writes facts as JSON Lines (UTF-8, one object a line, unset optional fields left out)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for fact in facts:
            fh.write(json.dumps(fact.model_dump(exclude_none=True), ensure_ascii=False) + "\n")
    return path
