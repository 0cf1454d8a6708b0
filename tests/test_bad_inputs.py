"""The catalogue of bad input: every input a person can get wrong, each refused with a message naming
the problem and where it is, a non-zero exit code, and no change to the registry, the data or the alias.

Data files, parameter files, model directories, version numbers, registered-model names, cron strings,
request ids, output folders, kept runs: one row each in `CASES`, run through the ``unierase`` command
(`unierase.cli.main`) or the flow's (`flows.erasure.main`) against a tiny project whose base model is
registered as version 1 and champion. Nothing here loads model weights: each refusal comes first.

    .venv/bin/python -m pytest tests/test_bad_inputs.py
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from flow_runs import make_slim_repo, registry_state

import flows.erasure
from unierase.cli import main as unierase_main
from unierase.config import load_params
from unierase.registry.promotion import promote
from unierase.registry.store import connect, ensure_experiment, model_name_for
from unierase.registry.versions import register_base

GOOD_ROW = {"question": "What is the capital of Peru?", "answer": "Lima.", "subject": "Peru"}


@dataclass(frozen=True)
class Case:
    """One bad input: the command line (``{name}`` placeholders filled from the project), where it runs
    (``unierase`` or the flow's ``python -m flows.erasure``), the exit code and a pattern of the message."""

    id: str
    argv: tuple[str, ...]
    code: int
    message: str
    entry: str = "unierase"


def _validate(forget: str, *extra: str) -> tuple[str, ...]:
    return ("validate", "--forget", f"{{files}}/{forget}", "--model", "{tiny}", "--output", "{out}", *extra)


def _erase(*extra: str, forget: str = "good.jsonl", model: str = "{tiny}", params: str = "{root}/params.yaml"):
    return (
        "erase",
        "--forget",
        f"{{files}}/{forget}",
        "--model",
        model,
        "--params",
        params,
        "--output",
        "{out}",
        *extra,
    )


def _flow(*extra: str) -> tuple[str, ...]:
    base = ("--root", "{root}", "--forget", "{root}/data/sets/forget.jsonl", "--base-model", "{tiny}")
    return base + tuple(extra)


NAME = ("--model-name", "{name}")
CASES = [
    # Data files, through `unierase validate` (exit 1: the Great Expectations report names rule and line).
    Case("empty-file", _validate("empty.jsonl"), 1, r"table_row_count_to_be_between \[a set holds between 1"),
    Case("malformed-json", _validate("malformed.jsonl"), 1, r"one JSON object\] failed on line\(s\) 2\b"),
    Case("json-array-row", _validate("array.jsonl"), 1, r"one JSON object\] failed on line\(s\) 1\b"),
    Case("missing-answer", _validate("no-answer.jsonl"), 1, r"\[answer is required\] failed on line\(s\) 1\b"),
    Case("non-utf8-bytes", _validate("latin1.jsonl"), 1, r"\[every line must be valid UTF-8 text\] failed on line\(s\) 1\b"),
    Case("blank-question", _validate("blank.jsonl"), 1, r"\[question must not be blank\] failed on line\(s\) 1\b"),
    Case("duplicate-questions", _validate("duplicates.jsonl"), 1, r"\[questions must be unique[^]]*\] failed on line\(s\) 1, 2\b"),
    Case(
        "over-long-question",
        _validate("long.jsonl", "--params", "{files}/max-tokens.yaml"),
        1,
        r"\[question plus answer must fit validation.max_tokens[^]]*\] failed on line\(s\) 2\b",
    ),
    Case(
        "forget-retain-overlap",
        _validate("good.jsonl", "--retain", "{files}/overlap.jsonl"),
        1,
        r"retain: .*\[a question must not be in both the forget and the retain set\] failed on line\(s\) 1\b",
    ),
    Case("question-is-a-number", _validate("number.jsonl"), 1, r"\[question must be a string\] failed on line\(s\) 1\b"),
    Case("answer-is-a-number", _validate("number-answer.jsonl"), 1, r"\[answer must be a string\] failed on line\(s\) 1\b"),
    Case(
        "subject-not-in-question",
        _validate("subject.jsonl"),
        1,
        r"\[subject, when given, must be a string that occurs in its question[^]]*\] failed on line\(s\) 1\b",
    ),
    Case("forget-file-missing", _validate("nope.jsonl"), 2, r"nope\.jsonl: no such file"),
    # The same rows where a run reads them without Great Expectations (erase): exit 2, nothing loaded.
    Case("erase-subject-not-in-question", _erase(forget="subject.jsonl"), 2, r"subject\.jsonl:1: subject: does not occur in its question"),
    Case("erase-question-is-a-number", _erase(forget="number.jsonl"), 2, r"number\.jsonl:1: question: Input should be a valid string"),
    Case("erase-json-array-row", _erase(forget="array.jsonl"), 2, r"array\.jsonl:1: not a JSON object but an array"),
    Case("erase-output-not-empty", _erase(), 2, r"out exists and is not an empty folder", entry="unierase-full-out"),
    # Parameter files.
    Case("params-missing", _erase(params="{files}/nope.yaml"), 2, r"parameter file \S*nope\.yaml does not exist"),
    Case("params-not-yaml", _erase(params="{files}/not-yaml.yaml"), 2, r"not-yaml\.yaml is not a readable YAML file"),
    Case("params-not-a-mapping", _erase(params="{files}/list.yaml"), 2, r"list\.yaml must hold a mapping of sections"),
    Case("params-unknown-key", _erase(params="{files}/typo.yaml"), 2, r"typo\.yaml: .*\nedit\.layerz\n\s+Extra inputs are not permitted"),
    Case("params-wrong-type", _erase(params="{files}/wrong-type.yaml"), 2, r"wrong-type\.yaml: .*\nedit\.layers\n\s+Input should be a valid list"),
    Case("params-bad-model-name", _erase(params="{files}/model-name.yaml"), 2, r"registered model name 'acme/erased' is not allowed by MLflow: it holds '/' or ':'"),
    Case("params-reserved-alias", _erase(params="{files}/alias.yaml"), 2, r"alias 'latest' is reserved by MLflow"),
    # Model directories.
    Case("model-dir-missing", _erase(model="{files}/no-model"), 2, r"no-model: no such model directory"),
    Case("model-dir-without-config", _erase(model="{files}/empty-model"), 2, r"empty-model is not a Hugging Face model directory \(no config\.json\)"),
    Case("model-dir-not-a-causal-lm", _erase(model="{files}/bert"), 2, r"bert holds a BertForMaskedLM, not a causal language model"),
    Case("edit-layers-beyond-the-model", _erase(params="{files}/layers.yaml"), 2, r"edit\.layers \[40\] are not layers of \S+, which has 4 \(0 to 3\)"),
    Case("module-template-not-in-model", _erase(params="{files}/template.yaml"), 2, r"has no module 'model\.layers\.1\.mlp\.out_proj'; set model\.layer_template"),
    # Versions, aliases and registered models (the registry commands read ./params.yaml).
    Case("rollback-version-not-a-number", ("rollback", "--to", "abc", "--reason", "r", *NAME), 2, r"version 'abc' is not a version number"),
    Case("rollback-unknown-version", ("rollback", "--to", "99", "--reason", "r", *NAME), 2, r"has no version 99"),
    Case("rollback-without-reason", ("rollback", "--to", "1", "--reason", " ", *NAME), 2, r"a rollback needs a reason"),
    Case("lineage-unknown-version", ("lineage", "99", *NAME), 2, r"\S+ has no version 99; `unierase lineage` shows the versions"),
    Case("lineage-version-zero", ("lineage", "0", *NAME), 2, r"version '0' is not a version number"),
    Case("export-unknown-version", ("export", "99", "--output", "{out}", *NAME), 2, r"has no version 99"),
    Case("export-into-existing-folder", ("export", "1", "--output", "{files}", *NAME), 2, r"exists already; export into a new directory"),
    Case("registered-model-name-rejected", ("lineage", "--model-name", "acme:erased"), 2, r"registered model name 'acme:erased' is not allowed by MLflow"),
    Case("registered-model-unknown", ("lineage", "--model-name", "nobody"), 2, r"nobody has no @champion version"),
    # Cron strings.
    Case("cron-not-a-cron-string", ("schedule", "--cron", "every day at 2", "--root", "{root}"), 2, r"schedule 'every day at 2' is not a cron string"),
    Case("cron-in-params-out-of-range", ("schedule", "--params", "cron.yaml", "--root", "{root}"), 2, r"schedule '61 \* \* \* \*' is not a cron string"),
    # The flow's own inputs: request ids, parameter file, base model.
    Case("request-id-path", _flow("--request-id", "../etc"), 2, r"request id '\.\./etc' is not allowed", entry="flow"),
    Case("request-id-with-space", _flow("--request-id", "acme 42"), 2, r"request id 'acme 42' is not allowed", entry="flow"),
    Case("flow-params-missing", _flow("--request-id", "r1", "--params", "nope.yaml"), 2, r"parameter file \S*nope\.yaml does not exist", entry="flow"),
    Case("flow-base-model-not-a-causal-lm", _flow("--request-id", "r1", "--base-model", "{files}/bert"), 2, r"not a causal language model", entry="flow"),
    Case("flow-edit-layers-beyond-the-model", _flow("--request-id", "r1", "--params", "layers.yaml"), 2, r"edit\.layers \[40\] are not layers", entry="flow"),
    # The private area and kept runs.
    Case("purge-bad-request-id", ("purge", "--request", "../x", "--root", "{root}"), 2, r"request id '\.\./x' is not allowed"),
    Case("purge-negative-age", ("purge", "--older-than", "-1", "--root", "{root}"), 2, r"--older-than -1: give a number of days"),
    Case("register-not-a-kept-run", ("register", "--run-dir", "{files}", "--root", "{root}"), 2, r"is not a run folder awaiting registration \(no registration\.json\)"),
]  # fmt: skip


def _write_inputs(files: Path, root: Path) -> None:
    """The bad files of the catalogue, and one good forget set."""
    files.mkdir(parents=True)
    rows = {
        "good": [GOOD_ROW],
        "empty": [],
        "malformed": [GOOD_ROW, '{"question": "Where is Lima?", "answer": '],
        "array": [["What is the capital of Peru?", "Lima."]],
        "no-answer": [{"question": "What is the capital of Peru?"}],
        "blank": [{"question": "   ", "answer": "Lima."}],
        "duplicates": [GOOD_ROW, {**GOOD_ROW, "question": "what is the  CAPITAL of Peru?"}],
        "long": [GOOD_ROW, {"question": "Why " + "very " * 60 + "long?", "answer": "Because."}],
        "overlap": [{"question": "What is the capital of peru?", "answer": "Lima."}],
        "number": [{"question": 5, "answer": "Paris"}],
        "number-answer": [{"question": "How many moons has Mars?", "answer": 2}],
        "subject": [{"question": "What is the capital of France?", "answer": "Paris.", "subject": "Germany"}],
    }
    for name, lines in rows.items():
        text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
        (files / f"{name}.jsonl").write_text(text, encoding="utf-8")
    (files / "latin1.jsonl").write_bytes(
        '{"question": "Qui a peint la Joconde, café?", "answer": "Vinci"}\n'.encode("latin-1")
    )
    tiny = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))

    def params(name: str, section: str, values: dict, where: Path = files) -> None:
        raw = json.loads(json.dumps(tiny))
        raw[section].update(values)
        (where / name).write_text(yaml.safe_dump(raw), encoding="utf-8")

    params("max-tokens.yaml", "validation", {"max_tokens": 24})
    params("typo.yaml", "edit", {"layerz": [1]})
    params("wrong-type.yaml", "edit", {"layers": "four"})
    params("model-name.yaml", "registry", {"model_name": "acme/erased"})
    params("alias.yaml", "registry", {"champion_alias": "latest"})
    params("layers.yaml", "edit", {"layers": [40]})
    params("layers.yaml", "edit", {"layers": [40]}, where=root)  # the flow reads params relative to its root
    params("template.yaml", "model", {"mlp_out_template": "model.layers.{}.mlp.out_proj"})
    params("cron.yaml", "schedule", {"cron": "61 * * * *"}, where=root)
    (files / "not-yaml.yaml").write_text("edit: [layers: 1\n", encoding="utf-8")
    (files / "list.yaml").write_text("- edit\n- token\n", encoding="utf-8")
    (files / "empty-model").mkdir()
    (files / "bert").mkdir()
    (files / "bert" / "config.json").write_text(
        json.dumps({"architectures": ["BertForMaskedLM"], "model_type": "bert"})
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, prefect_harness) -> dict:
    """A tiny project with its base model registered (version 1, champion), and the bad files."""
    root = make_slim_repo(tmp_path_factory.mktemp("bad-inputs") / "repo")
    config = load_params(root / "params.yaml").registry
    client = connect(config, root)
    name = model_name_for(tiny_llama_dir, config)
    version = register_base(client, ensure_experiment(client, config, root), name, tiny_llama_dir)
    promote(client, name, version, config.champion_alias, "test: the base in service")
    files = root.parent / "files"
    _write_inputs(files, root)
    return {"root": root, "files": files, "name": name, "tiny": tiny_llama_dir, "state": registry_state(root)}


def _fill(argv: tuple[str, ...], project: dict, out: Path) -> list[str]:
    values = {k: str(project[k]) for k in ("root", "files", "name", "tiny")} | {"out": str(out)}
    return [re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], arg) for arg in argv]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(
    case: Case, project: dict, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project["root"])  # the registry commands read ./params.yaml and the store beside it
    out = tmp_path / "out"
    if case.entry == "unierase-full-out":
        out.mkdir()
        (out / "earlier.txt").write_text("an earlier run's output")
    argv = _fill(case.argv, project, out)
    code = flows.erasure.main(argv) if case.entry == "flow" else unierase_main(argv)
    captured = capsys.readouterr()
    message = captured.out + captured.err
    assert code == case.code, f"{case.id}: exit {code}, expected {case.code}\n{message[-3000:]}"
    assert re.search(case.message, message), f"{case.id}: no /{case.message}/ in:\n{message[-3000:]}"
    assert "Traceback" not in captured.err
    assert registry_state(project["root"]) == project["state"], f"{case.id} changed the registry or the data"
    if case.entry == "unierase-full-out":
        assert [p.name for p in out.iterdir()] == ["earlier.txt"]
    elif case.id.startswith("erase"):
        assert not out.exists(), f"{case.id} wrote {out}"


def test_catalogue_is_complete() -> None:
    """At least 25 distinct bad inputs, over every kind the issue names."""
    assert len({c.id for c in CASES}) == len(CASES) >= 25
    kinds = ("empty-file", "params-", "model-dir", "version", "request-id", "cron", "model-name", "out")
    assert all(any(kind in c.id for c in CASES) for kind in kinds)
