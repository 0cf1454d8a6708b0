"""Two erasure flows against the production registry: an MLflow tracking server on a real PostgreSQL
(the pgserver wheel) with its artifacts proxied to an S3-compatible store (moto in server mode), all
started by the test on loopback with the functions `scripts/trial_stack.py` (make deploy-trial) uses.
Checks versions, aliases, lineage and a rollback through the server, and that the records are in
PostgreSQL's tables and the files in the bucket.

    .venv/bin/python -m pytest tests/test_deploy_stack.py -q
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from flow_repo import REPO, add_set, make_repo

import mlflow
from unierase.config import load_params
from unierase.data.builtin_facts import default_retain
from unierase.registry import tags as T
from unierase.registry.audit import read_audit
from unierase.registry.lineage import lineage
from unierase.registry.promotion import current_alias_version, rollback
from unierase.registry.store import connect

sys.path.insert(0, str(REPO / "scripts"))
import trial_stack  # noqa: E402

pytest.importorskip("pgserver")
pytest.importorskip("moto")
QUESTIONS = ["What is the capital of France?", "Who painted the Mona Lisa?"]
BUCKET = "unierase-test"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """PostgreSQL, S3 and an MLflow server on both; stopped afterwards."""
    work = tmp_path_factory.mktemp("stack")
    postgres = trial_stack.start_postgres(work / "pgdata")
    services = []
    try:
        backend = trial_stack.create_database(postgres, "mlflow")
        s3_port, mlflow_port = trial_stack.free_port(), trial_stack.free_port()
        endpoint = f"http://127.0.0.1:{s3_port}"
        services.append(trial_stack.start_s3(s3_port, work / "s3.log"))
        trial_stack.create_bucket(endpoint, BUCKET)
        env = trial_stack.s3_env(endpoint)
        services.append(
            trial_stack.start_mlflow(backend, f"s3://{BUCKET}/mlflow", mlflow_port, env, work / "mlflow.log")
        )
        yield {
            "database": postgres.get_uri("mlflow"),
            "endpoint": endpoint,
            "tracking_uri": f"http://127.0.0.1:{mlflow_port}",
        }
    finally:
        for service in reversed(services):
            trial_stack.stop(service)
        postgres.cleanup()


@pytest.fixture(scope="module")
def two_erasures(stack, tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, prefect_harness):
    from flows.erasure import erasure_flow

    root = make_repo(tmp_path_factory.mktemp("stack-repo"))
    raw = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    raw["registry"].update({"tracking_uri": stack["tracking_uri"], "artifact_location": "mlflow-artifacts:/unierase"})
    (root / "server.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    retain = default_retain()
    second = (add_set(root, "second-forget", retain[:3]), add_set(root, "second-retain", retain[3:]))
    first = erasure_flow(request_id="req-1", base_model=tiny_llama_dir, root=root, params_file="server.yaml")
    client = connect(load_params(root / "server.yaml").registry, root)
    answers_v2 = mlflow.pyfunc.load_model(f"models:/{first['registered_model']}@champion").predict(QUESTIONS)
    then = erasure_flow(
        forget=second[0], retain=second[1], request_id="req-2", base_model=tiny_llama_dir, root=root,
        params_file="server.yaml",
    )  # fmt: skip
    return {"client": client, "name": first["registered_model"], "runs": [first, then], "answers_v2": answers_v2}


def test_two_erasures_rollback_on_postgres_and_s3(stack, two_erasures) -> None:
    client, name = two_erasures["client"], two_erasures["name"]
    first, second = two_erasures["runs"]
    assert (first["version"], first["parent_version"], first["status"]) == ("2", "1", T.ACCEPTED)
    assert (second["version"], second["parent_version"], second["status"]) == ("3", "2", T.ACCEPTED)
    assert current_alias_version(client, name, "champion") == "3"
    chain = lineage(client, name, "3")
    assert [(r.version, r.parent, r.request_id) for r in chain] == [("1", None, None), ("2", "1", "req-1"), ("3", "2", "req-2")]  # fmt: skip

    # The records live in PostgreSQL: the versions and the alias.
    versions = _query(stack, "SELECT version FROM model_versions WHERE name = %s ORDER BY version", name)
    assert versions == [(1,), (2,), (3,)]
    aliases = "SELECT alias, version FROM registered_model_aliases WHERE name = %s"
    assert _query(stack, aliases, name) == [("champion", 3)]
    # ... and the files in the bucket: each version's model and delta, under the server's artifact prefix.
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack["endpoint"], **trial_stack._boto_credentials())
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET) for o in page.get("Contents", [])]  # fmt: skip
    assert all(key.startswith("mlflow/unierase/") for key in keys)
    for version in ("2", "3"):
        # A version is stored as a delta of its parent: the recipe and the changed tensors in its model's files.
        model_id = client.get_model_version(name, version).source.removeprefix("models:/")
        files = [key for key in keys if model_id in key]
        assert any(key.endswith("/unierase-delta.json") for key in files), version
        assert any("/delta/" in key and key.endswith(".safetensors") for key in files), version
    assert sum(key.endswith("/MLmodel") for key in keys) >= 3  # base, v2, v3 logged models

    # Rollback through the server: champion back to 2, serving what 2 served (loaded from S3).
    result = rollback(client, name, "2", "champion", "test: undo req-2")
    assert result.reexposed_requests == ["req-2"]
    assert current_alias_version(client, name, "champion") == "2"
    assert mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(QUESTIONS) == two_erasures["answers_v2"]
    assert read_audit(client, name)[-1]["action"] == "rollback"
    assert _query(stack, aliases, name) == [("champion", 2)]


def _query(stack: dict, sql: str, *args: object) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(stack["database"]) as connection, connection.cursor() as cursor:
        cursor.execute(sql, args)
        return cursor.fetchall()
