"""The erasure flow end to end on a tiny model, under a temporary Prefect server, MLflow store and DVC
repo: two sequential erasures give versions 2 and 3 with the right parents; rollback to 2 serves what
version 2 served; a forget set that fails validation changes nothing in the registry; the same request
again registers nothing.

    .venv/bin/pytest tests/test_flow.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from flow_repo import add_set, make_repo

import mlflow
from flows.erasure import erasure_flow
from unierase.config import load_params
from unierase.data.builtin_facts import default_retain
from unierase.data.validation import DataValidationError
from unierase.digests import model_dir_sha256
from unierase.registry import tags as T
from unierase.registry.audit import read_audit
from unierase.registry.lineage import lineage
from unierase.registry.promotion import current_alias_version, rollback
from unierase.registry.store import connect

QUESTIONS = ["What is the capital of France?", "Who painted the Mona Lisa?"]


@pytest.fixture(scope="module")
def two_erasures(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, prefect_harness):
    """Runs the flow twice on a fresh repo: the default request, then three retain facts as a new request."""
    root = make_repo(tmp_path_factory.mktemp("flow-repo"))
    retain = default_retain()
    second_forget = add_set(root, "second-forget", retain[:3])
    second_retain = add_set(root, "second-retain", retain[3:])
    first = erasure_flow(request_id="req-1", base_model=tiny_llama_dir, root=root)
    client = connect(load_params(root / "params.yaml").registry, root)
    name = first["registered_model"]
    answers_v2 = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(QUESTIONS)
    second = erasure_flow(
        forget=second_forget, retain=second_retain, request_id="req-2", base_model=tiny_llama_dir, root=root
    )
    return {
        "root": root,
        "client": client,
        "name": name,
        "runs": [first, second],
        "answers_v2": answers_v2,
        "second_request": (second_forget, second_retain),
    }


def test_sequential_erasures_make_versions_2_and_3(two_erasures) -> None:
    first, second = two_erasures["runs"]
    assert (first["version"], first["parent_version"], first["status"]) == ("2", "1", T.ACCEPTED)
    assert (second["version"], second["parent_version"], second["status"]) == ("3", "2", T.ACCEPTED)
    client, name = two_erasures["client"], two_erasures["name"]
    assert current_alias_version(client, name, "champion") == "3"
    chain = lineage(client, name, "3")
    assert [(r.version, r.parent, r.request_id) for r in chain] == [
        ("1", None, None),
        ("2", "1", "req-1"),
        ("3", "2", "req-2"),
    ]
    v3 = chain[-1]
    assert v3.tags["unierase.data.forget.path"] == "data/requests/second-forget.jsonl"
    assert v3.tags["unierase.data.forget.dvc_rev"] != "untracked"  # the git commit of its .dvc file
    assert v3.tags["unierase.flow_run_id"] and v3.tags["unierase.config_hash"] and v3.tags[T.DELTA_SHA256]
    assert "after_forget_refusal_rate" in v3.metrics
    # Every run evaluates: the aggregates and each leak audit are the version's metrics.
    assert {"eval_forget_efficacy", "eval_model_ability"} <= set(v3.metrics)
    audits = ("strip_special", "ban_token", "suppress_token", "prefill_answer", "prefill_subject")
    audits += ("quantise_int8", "quantise_nf4", "relearn")
    assert {f"audit_forget_{audit}_rougeL_recall" for audit in audits} <= set(v3.metrics)
    assert {f"audit_forget_{audit}_num_answered" for audit in audits} <= set(v3.metrics)
    # The audits' verdict, in words, on the version: it holds, or it is only a redirection.
    worst, plain = v3.metrics["audit_forget_attacks_leaked_worst"], v3.metrics["audit_forget_attacks_leaked_plain"]
    verdict = "forget: only a redirection" if worst > plain else "forget: holds under every audit run"
    assert v3.tags[T.LEAK_VERDICT].startswith(verdict)
    run = client.get_run(v3.run_id)
    assert {i.dataset.digest for i in run.inputs.dataset_inputs} == {
        v3.tags["unierase.data.forget.md5"],
        v3.tags["unierase.data.retain.md5"],
    }
    # Stored as a delta of version 2, rebuilt bit for bit: the directory the flow's erase stage wrote.
    from unierase.registry.rebuild import materialize

    assert v3.tags[T.STORAGE] == T.DELTA
    assert model_dir_sha256(materialize(client, name, "3")) == v3.tags[T.MODEL_SHA256]


def test_rollback_serves_version_2_again(two_erasures) -> None:
    client, name = two_erasures["client"], two_erasures["name"]
    result = rollback(client, name, "2", "champion", "test: undo req-2")
    assert result.reexposed_requests == ["req-2"]
    assert current_alias_version(client, name, "champion") == "2"
    answers = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(QUESTIONS)
    assert answers == two_erasures["answers_v2"]
    assert read_audit(client, name)[-1]["action"] == "rollback"


def test_invalid_forget_set_leaves_registry_unchanged(two_erasures, tiny_llama_dir: Path) -> None:
    client, name, root = two_erasures["client"], two_erasures["name"], two_erasures["root"]
    before = sorted((v.version, v.tags.get(T.STATUS)) for v in client.search_model_versions(f"name='{name}'"))
    champion, audit = current_alias_version(client, name, "champion"), read_audit(client, name)
    bad = root / "data/requests/bad.jsonl"
    rows = [{"question": "What is the capital of Germany?", "answer": "Berlin."}, {"question": "", "answer": "x"}]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    state = erasure_flow(forget=bad, request_id="bad", base_model=tiny_llama_dir, root=root, return_state=True)
    assert state.is_failed()
    with pytest.raises(DataValidationError, match="line"):
        state.result()
    after = sorted((v.version, v.tags.get(T.STATUS)) for v in client.search_model_versions(f"name='{name}'"))
    assert after == before
    assert current_alias_version(client, name, "champion") == champion and read_audit(client, name) == audit
    assert list((root / "outputs/validation").glob("bad-*/index.html"))  # the Data Docs the message names


def test_failed_edit_registers_nothing(two_erasures, tiny_llama_dir: Path) -> None:
    client, name, root = two_erasures["client"], two_erasures["name"], two_erasures["root"]
    before = sorted(str(v.version) for v in client.search_model_versions(f"name='{name}'"))
    champion, audit = current_alias_version(client, name, "champion"), read_audit(client, name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["edit"]["layers"] = [40]  # the tiny model has 4 layers: the edit fails after validation
    (root / "bad-params.yaml").write_text(yaml.safe_dump(params))
    state = erasure_flow(
        request_id="doomed", params_file="bad-params.yaml", base_model=tiny_llama_dir, root=root, return_state=True
    )
    assert state.is_failed()
    assert sorted(str(v.version) for v in client.search_model_versions(f"name='{name}'")) == before
    assert current_alias_version(client, name, "champion") == champion and read_audit(client, name) == audit


def test_evaluation_artifacts_in_prefect(two_erasures) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    keys = ["erasure-evaluation", "erasure-metrics"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    by_type = {a.type: a for a in artifacts}
    assert {"markdown", "table"} <= set(by_type)
    assert "| forget_refusal_rate |" in by_type["markdown"].data


def test_the_same_request_again_registers_nothing(two_erasures, tiny_llama_dir: Path) -> None:
    client, name, root = two_erasures["client"], two_erasures["name"], two_erasures["root"]
    forget, retain = two_erasures["second_request"]
    before = sorted(str(v.version) for v in client.search_model_versions(f"name='{name}'"))
    champion = current_alias_version(client, name, "champion")
    again = erasure_flow(forget=forget, retain=retain, request_id="req-2", base_model=tiny_llama_dir, root=root)
    assert (again["version"], again["already_applied"]) == ("3", True)
    assert sorted(str(v.version) for v in client.search_model_versions(f"name='{name}'")) == before
    assert current_alias_version(client, name, "champion") == champion
