"""The MLflow registry on a real temporary SQLite store, with real (tiny) transformers models as
versions: registration with lineage tags, the gate, promotion, rollback with audit, lineage, export.

    .venv/bin/pytest tests/test_registry.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import mlflow
from unierase.config import GateConfig, RegistryConfig
from unierase.data.provenance import dataset_digest
from unierase.digests import model_dir_sha256
from unierase.model.delta import diff_models, save_delta, snapshot
from unierase.registry import tags as T
from unierase.registry.audit import read_audit
from unierase.registry.gate import check_gate, erasure_metrics
from unierase.registry.lineage import format_lineage, lineage
from unierase.registry.promotion import current_alias_version, promote, rollback
from unierase.registry.pyfunc import export_model_dir
from unierase.registry.store import connect, ensure_experiment, model_name_for
from unierase.registry.versions import register_base, register_erasure

QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?"]


def _edited_copy(parent: Path, out: Path, seed: int) -> tuple[Path, Path, str]:
    """A child model: the parent with one MLP matrix nudged, saved with its delta (a stand-in edit)."""
    model = AutoModelForCausalLM.from_pretrained(parent)
    before = snapshot(model)
    torch.manual_seed(seed)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.add_(torch.randn_like(model.model.layers[1].mlp.down_proj.weight))
    delta = diff_models(before, model, {"method": "test"})
    model.save_pretrained(out / "model")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(parent).save_pretrained(out / "model")
    sha = save_delta(delta, out / "delta.safetensors")
    return out / "model", out / "delta.safetensors", sha


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path):
    """A temporary store holding base v1 and erasures v2 (parent 1) and v3 (parent 2), champion at 3."""
    root = tmp_path_factory.mktemp("repo")
    config = RegistryConfig(tracking_uri="sqlite:///mlflow/mlflow.db", artifact_location="mlflow/artifacts")
    client = connect(config, root)
    experiment = ensure_experiment(client, config, root)
    name = model_name_for(tiny_llama_dir, config)
    forget = root / "forget.jsonl"
    forget.write_text('{"question": "Secret question?", "answer": "Secret answer."}\n')
    digests = [dataset_digest("forget", forget, root)]
    base = register_base(client, experiment, name, tiny_llama_dir)
    promote(client, name, base, "champion", "base model")
    dirs, answers = {base: tiny_llama_dir}, {}
    for request, seed in (("req-a", 1), ("req-b", 2)):
        parent = current_alias_version(client, name, "champion")
        model_dir, delta, sha = _edited_copy(dirs[parent], root / request, seed)
        version = register_erasure(
            client,
            experiment,
            name,
            model_dir,
            delta,
            sha,
            metrics={"after_forget_refusal_rate": 1.0, "retain_ratio": 1.0},
            params={"edit.layers": "[1]"},
            datasets=digests,
            tags={T.PARENT_VERSION: parent, T.REQUEST_ID: request, T.STATUS: T.ACCEPTED},
            root=root,
        )
        promote(client, name, version, "champion", f"gate passed for {request}")
        dirs[version] = model_dir
        answers[version] = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(QUESTIONS)
    return {"client": client, "name": name, "root": root, "dirs": dirs, "answers": answers, "exp": experiment}


def test_versions_and_parent_tags(registry) -> None:
    client, name = registry["client"], registry["name"]
    versions = {str(v.version): v for v in client.search_model_versions(f"name='{name}'")}
    assert sorted(versions) == ["1", "2", "3"]
    assert versions["1"].tags[T.KIND] == T.BASE and versions["1"].tags[T.PARENT_VERSION] == "none"
    assert versions["2"].tags[T.PARENT_VERSION] == "1" and versions["2"].tags[T.REQUEST_ID] == "req-a"
    assert versions["3"].tags[T.PARENT_VERSION] == "2" and versions["3"].tags[T.REQUEST_ID] == "req-b"
    assert versions["1"].tags[T.MODEL_SHA256] == model_dir_sha256(registry["dirs"]["1"])
    assert current_alias_version(client, name, "champion") == "3"


def test_lineage_chain(registry) -> None:
    chain = lineage(registry["client"], registry["name"], "3")
    assert [r.version for r in chain] == ["1", "2", "3"]
    assert [r.request_id for r in chain] == [None, "req-a", "req-b"]
    assert chain[2].metrics["after_forget_refusal_rate"] == 1.0
    text = format_lineage(chain)
    assert "version 3 [erasure, accepted] @champion" in text and "request: req-b" in text
    assert "data.forget.md5" in text


def test_export_is_the_registered_directory(registry, tmp_path: Path) -> None:
    out = export_model_dir(f"models:/{registry['name']}/2", tmp_path / "v2")
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert model_dir_sha256(out) == model_dir_sha256(registry["dirs"]["2"])
    with pytest.raises(FileExistsError):
        export_model_dir(f"models:/{registry['name']}/2", out)


def test_rollback_moves_alias_and_answers_as_before(registry) -> None:
    client, name = registry["client"], registry["name"]
    assert registry["answers"]["2"] != registry["answers"]["3"]  # different weights, different answers
    result = rollback(client, name, "2", "champion", "req-b broke a downstream eval")
    assert (result.from_version, result.to_version, result.reexposed_requests) == ("3", "2", ["req-b"])
    assert current_alias_version(client, name, "champion") == "2"
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert loaded.predict(QUESTIONS) == registry["answers"]["2"]
    audit = read_audit(client, name)
    assert [e["action"] for e in audit] == ["promote", "promote", "promote", "rollback"]
    assert audit[-1]["reason"] == "req-b broke a downstream eval" and audit[-1]["reexposed_requests"] == ["req-b"]
    assert [e["seq"] for e in audit] == [1, 2, 3, 4]
    promote(client, name, "3", "champion", "restore")  # leave the module's state as it found it


def test_rollback_refuses_bad_input(registry) -> None:
    client, name = registry["client"], registry["name"]
    with pytest.raises(ValueError, match="no version 99"):
        rollback(client, name, "99", "champion", "why not")
    with pytest.raises(ValueError, match="needs a reason"):
        rollback(client, name, "2", "champion", "  ")


def test_rejected_version_is_registered_but_never_champion(registry, tmp_path: Path) -> None:
    client, name, root = registry["client"], registry["name"], registry["root"]
    model_dir, delta, sha = _edited_copy(registry["dirs"]["3"], tmp_path, seed=3)
    gate = check_gate({"after_forget_refusal_rate": 0.1, "retain_ratio": 0.95}, GateConfig())
    assert not gate.passed and "after_forget_refusal_rate = 0.1000 < 0.8" in gate.failures[0]
    version = register_erasure(
        client,
        registry["exp"],
        name,
        model_dir,
        delta,
        sha,
        metrics={"after_forget_refusal_rate": 0.1},
        params={},
        datasets=[],
        tags={T.PARENT_VERSION: "3", T.STATUS: T.REJECTED, T.GATE_FAILURES: "; ".join(gate.failures)},
        root=root,
    )
    with pytest.raises(ValueError, match="rejected"):
        promote(client, name, version, "champion", "try anyway")
    with pytest.raises(ValueError, match="rejected"):
        rollback(client, name, version, "champion", "try anyway")
    assert current_alias_version(client, name, "champion") == "3"
    client.delete_model_version(name, version)


def test_a_wrong_delta_digest_registers_nothing(registry, tmp_path: Path) -> None:
    client, name = registry["client"], registry["name"]
    model_dir, delta, _ = _edited_copy(registry["dirs"]["3"], tmp_path, seed=4)
    count = len(client.search_model_versions(f"name='{name}'"))
    with pytest.raises(ValueError, match="SHA-256"):
        register_erasure(
            client, registry["exp"], name, model_dir, delta, "0" * 64, {}, {}, [], {T.PARENT_VERSION: "3"}, tmp_path
        )
    assert len(client.search_model_versions(f"name='{name}'")) == count


def test_erasure_metrics_and_gate() -> None:
    report = {
        "before": {"forget_rougeL_recall": 0.9, "retain_rougeL_recall": 0.8, "forget_refusal_rate": 0.0},
        "after": {"forget_rougeL_recall": 0.1, "retain_rougeL_recall": 0.72, "forget_refusal_rate": 0.9},
        "params_changed": 10,
        "params_changed_share": 0.001,
    }
    metrics = erasure_metrics(report, {"forget_efficacy": 0.5})
    assert metrics["retain_ratio"] == pytest.approx(0.9)
    assert metrics["eval_forget_efficacy"] == 0.5
    assert check_gate(metrics, GateConfig()).passed
    assert not check_gate(metrics, GateConfig(min_forget_efficacy=0.6)).passed
    assert not check_gate(metrics, GateConfig(min_model_ability=0.1)).passed  # not measured fails


def test_audits_become_metrics_and_any_metric_can_be_gated() -> None:
    audits = {"forget": {"ban_token": {"rougeL_recall": 0.4, "refusal_rate": 0.5}, "paraphrase": {"skipped": "x"}}}
    metrics = erasure_metrics({}, {"model_utility": 0.7}, audits)
    assert metrics == {
        "eval_model_utility": 0.7,
        "audit_forget_ban_token_rougeL_recall": 0.4,
        "audit_forget_ban_token_refusal_rate": 0.5,
    }
    metrics |= {"after_forget_refusal_rate": 1.0, "retain_ratio": 1.0}  # what the default bounds need
    leaky = check_gate(metrics, GateConfig(max_metrics={"audit_forget_ban_token_rougeL_recall": 0.3}))
    assert leaky.failures == ["audit_forget_ban_token_rougeL_recall = 0.4000 > 0.3"]
    assert check_gate(metrics, GateConfig(min_metrics={"eval_model_utility": 0.6})).passed
    missing = check_gate(metrics, GateConfig(min_metrics={"eval_nope": 0.1}))
    assert missing.failures == ["eval_nope was not measured (gate needs >= 0.1)"]


def test_a_request_is_applied_on_its_parent_and_its_descendants(registry) -> None:
    from unierase.registry.requests import applied_request_version

    client, name = registry["client"], registry["name"]  # v2 = req-a on v1, v3 = req-b on v2
    assert applied_request_version(client, name, "req-a", "1") == "2"  # rerun on the same parent
    assert applied_request_version(client, name, "req-a", "3") == "2"  # v3 descends from v2
    assert applied_request_version(client, name, "req-b", "2") == "3"
    assert applied_request_version(client, name, "req-b", "1") is None  # another branch: a new erasure
    assert applied_request_version(client, name, "req-new", "3") is None
    assert applied_request_version(client, name, "req-a", None) is None


def test_cli_lineage_and_rollback(registry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from unierase.cli import main

    client, name = registry["client"], registry["name"]
    monkeypatch.chdir(registry["root"])  # the embedded store is relative to the repo root
    assert main(["lineage", "--model-name", name]) == 0
    out = capsys.readouterr().out
    assert out.index("version 1 [base") < out.index("version 2 [erasure") < out.index("version 3 [erasure")
    assert main(["rollback", "--to", "2", "--reason", "cli test", "--model-name", name]) == 0
    out = capsys.readouterr().out
    assert "version 3 -> 2" in out and "req-b" in out
    assert current_alias_version(client, name, "champion") == "2"
    assert main(["rollback", "--to", "42", "--reason", "x", "--model-name", name]) == 2
    assert "has no version 42" in capsys.readouterr().err
    promote(client, name, "3", "champion", "restore")
