"""Great Expectations checks on a forget set and a retain set, run before any model is loaded.

The suite: required columns present and non-null, question and answer strings, questions non-blank
and unique (after normalising case, Unicode form and whitespace), a given subject a span of its
question, every row valid UTF-8 and a JSON object, question plus answer within the model's context, no
question in both sets, and each set's size between 1 and a bound from config. A failed validation names
every broken row (by line number in its file) and the rule it broke, and writes GX Data Docs HTML.

The Data Docs show the values that broke an expectation, so the suite checks the text through
computed columns: a digest of each normalised question (uniqueness, overlap) and one flag per rule.
Neither the docs nor the messages hold a question, an answer or a subject.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from unierase.config import ValidationConfig
from unierase.data.facts import jsonl_lines, subject_in_question

logger = logging.getLogger(__name__)

NORMALIZED, NUM_TOKENS, VALID_UTF8, VALID_JSON = "_question_digest", "_num_tokens", "_valid_utf8", "_valid_json"
QUESTION_TEXT, ANSWER_TEXT, SUBJECT_IN_QUESTION = "_question_is_text", "_answer_is_text", "_subject_in_question"
# The rule each expectation stands for, by (expectation, column), in the words a user acts on.
RULES = {
    ("expect_table_row_count_to_be_between", None): "a set holds between 1 and validation.max_set_size rows",
    ("expect_column_values_to_be_in_set", VALID_UTF8): "every line must be valid UTF-8 text",
    ("expect_column_values_to_be_in_set", VALID_JSON): "every line must be one JSON object",
    ("expect_column_values_to_be_in_set", QUESTION_TEXT): "question must be a string",
    ("expect_column_values_to_be_in_set", ANSWER_TEXT): "answer must be a string",
    ("expect_column_values_to_be_in_set", SUBJECT_IN_QUESTION): "subject, when given, must be a string that "
    "occurs in its question (case aside)",
    ("expect_column_values_to_match_regex", "question"): "question must not be blank",
    ("expect_column_values_to_be_unique", NORMALIZED): "questions must be unique (case, spacing and Unicode "
    "form aside)",
    ("expect_column_values_to_not_be_in_set", NORMALIZED): "a question must not be in both the forget and the "
    "retain set",
    ("expect_column_values_to_be_between", NUM_TOKENS): "question plus answer must fit validation.max_tokens "
    "(or the model's context)",
}
_SHOWN_ROWS = 20  # line numbers listed per failed expectation in the message; the Data Docs list all


@dataclass(frozen=True)
class ExpectationFailure:
    """One expectation that did not hold on one set.

    Attributes:
        set_name: ``forget`` or ``retain``.
        expectation: The GX expectation type, e.g. ``expect_column_values_to_be_unique``.
        column: The column it checks, or None for a table-level expectation.
        lines: 1-based line numbers (in the set's file) of the rows that broke it.
        observed: The observed value of a table-level expectation (e.g. the row count), else None.
    """

    set_name: str
    expectation: str
    column: str | None
    lines: list[int]
    observed: str | None = None

    def describe(self) -> str:
        """One line naming the expectation, the column and the rows that broke it."""
        what = f"{self.expectation}({self.column})" if self.column else self.expectation
        if self.expectation == "expect_column_values_to_not_be_null":
            what += f" [{self.column} is required]"
        elif rule := RULES.get((self.expectation, self.column)):
            what += f" [{rule}]"
        if self.lines:
            shown = ", ".join(map(str, self.lines[:_SHOWN_ROWS]))
            more = f" and {len(self.lines) - _SHOWN_ROWS} more" if len(self.lines) > _SHOWN_ROWS else ""
            return f"{self.set_name}: {what} failed on line(s) {shown}{more}"
        return f"{self.set_name}: {what} failed" + (f" (observed {self.observed})" if self.observed else "")


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of `validate_sets`.

    Attributes:
        success: True when every expectation held on both sets.
        failures: The expectations that did not hold.
        row_counts: Set name -> number of rows read.
        docs_index: The Data Docs ``index.html`` written for this validation.
    """

    success: bool
    failures: list[ExpectationFailure] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)
    docs_index: Path | None = None

    def message(self) -> str:
        """A report a person can act on: which rows broke which expectation, and where the docs are."""
        if self.success:
            return f"forget and retain sets valid ({self.row_counts}); Data Docs: {self.docs_index}"
        lines = [f"data validation failed, {len(self.failures)} expectation(s) broken; Data Docs: {self.docs_index}"]
        return "\n".join(lines + [f"  {failure.describe()}" for failure in self.failures])


class DataValidationError(ValueError):
    """A forget or retain set broke the suite; ``result`` holds the details."""

    def __init__(self, result: ValidationResult) -> None:
        super().__init__(result.message())
        self.result = result


def normalize_question(text: str) -> str:
    """Case-folded, NFKC-normalised text with runs of whitespace collapsed: the identity of a question."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def question_digest(text: str) -> str:
    """A short SHA-256 of the normalised question: what the suite compares and the Data Docs show."""
    return hashlib.sha256(normalize_question(text).encode("utf-8", "replace")).hexdigest()[:16]


def row_flags(row: dict) -> dict[str, bool]:
    """The per-row rules the suite checks through computed columns: question and answer are strings
    (a missing one is the not-null expectation's to report), and a given subject occurs in its question."""
    question, answer, subject = row.get("question"), row.get("answer"), row.get("subject")
    subject_ok = subject is None or subject == "" or not isinstance(question, str)
    if isinstance(subject, str) and subject and isinstance(question, str):
        subject_ok = subject_in_question(subject, question)
    return {
        QUESTION_TEXT: question is None or isinstance(question, str),
        ANSWER_TEXT: answer is None or isinstance(answer, str),
        SUBJECT_IN_QUESTION: subject_ok,
    }


def read_rows(path: Path) -> list[dict]:
    """Reads a JSON Lines file leniently: each non-blank line becomes a row, broken lines included.

    Rows carry ``_valid_utf8`` and ``_valid_json`` flags instead of raising, so that the suite can name
    every broken line at once; ``_line`` is the line number.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows = []
    for number, raw in jsonl_lines(path):
        row: dict = {"_line": number, VALID_UTF8: True, VALID_JSON: True}
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            row[VALID_UTF8], text = False, raw.decode("utf-8", errors="replace")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            # A JSON escape can smuggle in a lone surrogate, which no UTF-8 file can hold.
            if not all(_encodable(v) for v in value.values()):
                row[VALID_UTF8] = False
                value = json.loads(json.dumps(value, ensure_ascii=False).encode("utf-8", "replace").decode("utf-8"))
            row.update({k: v for k, v in value.items() if not k.startswith("_")})
        else:
            row[VALID_JSON] = False
        rows.append(row)
    return rows


def _encodable(value: object) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def context_length(model_dir: Path | None, config: ValidationConfig) -> int | None:
    """The token budget of a row: the config's ``max_tokens`` or the model's ``max_position_embeddings``."""
    if config.max_tokens is not None:
        return config.max_tokens
    if model_dir is None:
        return None
    model_config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return model_config.get("max_position_embeddings")


def _token_counter(model_dir: Path | None):
    """Counts tokens with the model's tokenizer (no weights loaded); without one, UTF-8 bytes, which
    bound the token count of any byte-level tokenizer from above."""
    if model_dir is None:
        return lambda text: len(text.encode("utf-8", errors="replace"))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return lambda text: len(tokenizer(text, add_special_tokens=True)["input_ids"])


def _frame(rows: list[dict], config: ValidationConfig, count_tokens):
    import pandas as pd

    frame = pd.DataFrame(rows, columns=sorted({k for row in rows for k in row} | {"_line", *config.required_columns}))
    frame = frame.set_index("_line", drop=False)
    # pandas turns missing keys into NaN; GX's null checks treat NaN and None alike.
    frame[NORMALIZED] = [question_digest(q) if isinstance(q, str) else None for q in frame["question"]]
    flags = [row_flags(row) for row in rows]  # from the rows, as pandas turns a missing key into NaN
    for column in (QUESTION_TEXT, ANSWER_TEXT, SUBJECT_IN_QUESTION):
        frame[column] = [f[column] for f in flags]
    frame[NUM_TOKENS] = [
        count_tokens(f"{q} {a}") if isinstance(q, str) and isinstance(a, str) else 0
        for q, a in zip(frame["question"], frame["answer"])
    ]
    return frame


def build_suite(name: str, config: ValidationConfig, max_tokens: int | None, other_questions: list[str]):
    """The expectation suite of one set (``other_questions``: digests of the other set's questions)."""
    import great_expectations as gx

    ex = gx.expectations
    suite = gx.ExpectationSuite(name=name)
    suite.add_expectation(ex.ExpectTableRowCountToBeBetween(min_value=1, max_value=config.max_set_size))
    suite.add_expectation(ex.ExpectColumnValuesToBeInSet(column=VALID_UTF8, value_set=[True]))
    suite.add_expectation(ex.ExpectColumnValuesToBeInSet(column=VALID_JSON, value_set=[True]))
    for column in (QUESTION_TEXT, ANSWER_TEXT, SUBJECT_IN_QUESTION):
        suite.add_expectation(ex.ExpectColumnValuesToBeInSet(column=column, value_set=[True]))
    for column in config.required_columns:
        suite.add_expectation(ex.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(ex.ExpectColumnValuesToMatchRegex(column="question", regex=r"\S"))
    suite.add_expectation(ex.ExpectColumnValuesToBeUnique(column=NORMALIZED))
    suite.add_expectation(ex.ExpectColumnValuesToNotBeInSet(column=NORMALIZED, value_set=other_questions))
    if max_tokens is not None:
        suite.add_expectation(ex.ExpectColumnValuesToBeBetween(column=NUM_TOKENS, max_value=max_tokens))
    return suite


def validate_sets(
    forget_path: Path,
    retain_path: Path | None,
    config: ValidationConfig,
    model_dir: Path | None = None,
    docs_dir: Path | None = None,
) -> ValidationResult:
    """Runs the suite on a forget set and (if given) a retain set, and writes Data Docs.

    Args:
        forget_path: JSON Lines file of the facts to erase.
        retain_path: JSON Lines file of facts to keep, or None.
        config: Thresholds and required columns.
        model_dir: Model directory whose tokenizer and context length bound the rows (no weights are loaded).
        docs_dir: Where the Data Docs site goes; ``config.docs_dir`` when None.

    Returns:
        The result; ``success`` is False when any expectation failed (nothing is raised for bad data).

    Raises:
        FileNotFoundError: A set's file does not exist.
    """
    import great_expectations as gx

    docs_dir = Path(docs_dir or config.docs_dir).resolve()
    sets = {"forget": read_rows(Path(forget_path))}
    if retain_path is not None:
        sets["retain"] = read_rows(Path(retain_path))
    questions = {
        name: {question_digest(r["question"]) for r in rows if isinstance(r.get("question"), str)}
        for name, rows in sets.items()
    }
    count_tokens, max_tokens = _token_counter(model_dir), context_length(model_dir, config)

    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # one bar per metric is noise
    context.add_data_docs_site(
        "unierase",
        {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    source = context.data_sources.add_pandas("unierase-sets")
    failures, counts = [], {}
    for name, rows in sets.items():
        others = set().union(*(q for other, q in questions.items() if other != name))
        frame = _frame(rows, config, count_tokens)
        counts[name] = len(frame)
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(build_suite(f"{name}-set", config, max_tokens, sorted(others)))
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{name}-checkpoint",
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["unierase"])],
                result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["_line"]},
            )
        )
        outcome = checkpoint.run(batch_parameters={"dataframe": frame})
        for run_result in outcome.run_results.values():
            failures += [_failure(name, r) for r in run_result.results if not r.success]
    result = ValidationResult(not failures, failures, counts, docs_dir / "index.html")
    logger.info("%s", result.message())
    return result


def _failure(set_name: str, result) -> ExpectationFailure:
    config = result.expectation_config
    details = result.result or {}
    lines = sorted({int(i["_line"] if isinstance(i, dict) else i) for i in details.get("unexpected_index_list") or []})
    observed = details.get("observed_value")
    if result.exception_info and result.exception_info.get("raised_exception"):
        observed = result.exception_info.get("exception_message")
    return ExpectationFailure(
        set_name, config.type, config.kwargs.get("column"), lines, None if observed is None else str(observed)
    )
