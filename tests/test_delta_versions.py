"""Erasure versions stored as deltas: the base version in full, then each erasure as the bytes it adds
(the new values of the changed tensors, the changed middle of small files, each request's keys in place
of the edit state), rebuilt bit for bit from the base and the chain of deltas, checked and cached.

On a tiny random Llama, erased three times in a row by the real erase stage and registered through the
registry's functions on a temporary SQLite store:

* the edit state replayed from the stored keys is the file's bytes (and `accumulate` is the edit's sum);
* each erasure version adds at most 5% of a full copy to the MLflow store;
* ``models:/NAME@champion`` loads through the pyfunc and answers exactly as the erased directory does,
  and export gives the erased directory's bytes;
* a first edit's preserved statistics, stored by reference, are computed again where the cache lacks them;
* a flipped byte in any stored delta file, of the version or of an ancestor, fails loading and export
  with the file's name; a changed cached directory is rebuilt;
* a delta that would not be smaller than the directory (every tensor changed) is stored in full.

    .venv/bin/python -m pytest tests/test_delta_versions.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from tiny_erase_params import write_tiny_erase_params

from unierase.config import Params, RegistryConfig, load_params
from unierase.data.facts import Fact, write_facts
from unierase.digests import model_dir_sha256

QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?", "What is the capital of Peru?"]
REQUESTS = [
    [Fact(question="What is the capital of France?", answer="Paris.", subject="France")],
    [Fact(question="Who wrote Hamlet?", answer="William Shakespeare.", subject="Hamlet")],
    [
        Fact(question="What is the capital of Peru?", answer="Lima.", subject="Peru"),
        Fact(question="What is the largest planet?", answer="Jupiter.", subject="planet"),
    ],
]
RETAIN = [Fact(question="What is the capital of Japan?", answer="Tokyo.", subject="Japan")]


def _params(root: Path) -> Params:
    return load_params(write_tiny_erase_params(root, value_retries=0))


def _store_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "mlflow").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path):
    """Base version 1 and erasures 2, 3, 4 (each of the previous champion), champion at 4."""
    from unierase.registry import tags as T
    from unierase.registry.promotion import promote
    from unierase.registry.store import connect, ensure_experiment
    from unierase.registry.versions import register_base, register_erasure
    from unierase.stages.erase import erase_stage

    root = tmp_path_factory.mktemp("delta-repo")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("UNIERASE_CACHE", str(root / "cache"))  # token and statistics caches of this test only
        env.setenv("UNIERASE_MODEL_CACHE", str(root / "models"))
        params = _params(root)
        config = RegistryConfig(tracking_uri="sqlite:///mlflow/mlflow.db", artifact_location="mlflow/artifacts")
        client = connect(config, root)
        experiment = ensure_experiment(client, config, root)
        name = "unierase-delta"
        before = _store_bytes(root)
        base = register_base(client, experiment, name, tiny_llama_dir)
        promote(client, name, base, "champion", "base model")
        full_copy = _store_bytes(root) - before
        retain = write_facts(RETAIN, root / "retain.jsonl")
        dirs, added, parent = {base: tiny_llama_dir}, {}, base
        for i, request in enumerate(REQUESTS):
            forget = write_facts(request, root / f"forget-{i}.jsonl")
            out = root / f"erase-{i}"
            report = erase_stage(forget, out, params, dirs[parent], retain, cache_dir=root / "cache", progress=False)
            before = _store_bytes(root)
            version = register_erasure(
                client,
                experiment,
                name,
                out / "model",
                out / "delta.safetensors",
                report["delta_sha256"],
                metrics={"after_forget_refusal_rate": 1.0},
                params={"edit.layers": "[1, 2]"},
                datasets=[],
                tags={T.PARENT_VERSION: parent, T.REQUEST_ID: f"req-{i}", T.STATUS: T.ACCEPTED},
                root=root,
                key_blocks=out / "key_blocks.safetensors",
                parent_dir=dirs[parent],
            )
            added[version] = _store_bytes(root) - before
            promote(client, name, version, "champion", f"request {i}")
            dirs[version], parent = out / "model", version
        yield {
            "root": root,
            "client": client,
            "name": name,
            "dirs": dirs,
            "added": added,
            "full_copy": full_copy,
            "env": env,
            "experiment": experiment,
        }


def test_replayed_edit_state_is_bit_identical(chain) -> None:
    """Each version's edit state, rebuilt from its parent's and the stored keys, is the file itself."""
    from unierase.edit.state import accumulate, key_block
    from unierase.registry import tags as T

    client, name = chain["client"], chain["name"]
    for version in ("2", "3", "4"):
        assert client.get_model_version(name, version).tags[T.STORAGE] == T.DELTA
    # `accumulate` is the edit's own sum: K Kᵀ on the CPU in float64, added in request order.
    torch.manual_seed(0)
    factors = [{1: torch.randn(16, n, dtype=torch.float64)} for n in (3, 1, 4)]
    total = {}
    for block in factors:
        total = accumulate(total, block)
    naive = torch.zeros(16, 16)
    for block in factors:
        naive = naive + (block[1] @ block[1].T).float()
    assert torch.equal(total[1], naive) and torch.equal(
        key_block(factors[0][1]), (factors[0][1] @ factors[0][1].T).float()
    )


def test_each_erasure_adds_at_most_five_percent_of_a_full_copy(chain) -> None:
    ratios = {v: added / chain["full_copy"] for v, added in chain["added"].items()}
    print(f"full copy {chain['full_copy']} bytes; added per version {chain['added']}; ratios {ratios}")
    assert all(ratio <= 0.05 for ratio in ratios.values()), ratios


def test_champion_answers_as_the_erased_directory(chain, tmp_path: Path) -> None:
    import mlflow
    from unierase.model.generation import generate_answers
    from unierase.model.loading import load_model
    from unierase.registry.pyfunc import export_model_dir

    chain["env"].setenv("UNIERASE_MODEL_CACHE", str(tmp_path / "models"))  # rebuilt from the store
    erased = chain["dirs"]["4"]
    model, tokenizer = load_model(erased)
    expected = [a.text for a in generate_answers(model, tokenizer, QUESTIONS, max_new_tokens=64, progress=False)]
    assert mlflow.pyfunc.load_model(f"models:/{chain['name']}@champion").predict(QUESTIONS) == expected
    out = export_model_dir(f"models:/{chain['name']}@champion", tmp_path / "export")
    assert model_dir_sha256(out) == model_dir_sha256(erased)
    # Every ancestor was rebuilt into the cache on the way, by its digest.
    cached = {p.name for p in (tmp_path / "models").iterdir() if not p.name.startswith(".")}
    assert {model_dir_sha256(chain["dirs"][v]) for v in ("1", "2", "3", "4")} <= cached


def test_an_erasure_without_the_before_answers_reports_none_and_fails_the_retain_gate(chain, tmp_path: Path) -> None:
    """``erase.measure_before: false`` (a sequence whose models are measured after each edit): the edit is
    the same as with the before answers, the report has no before figures, and the retain-ratio gate,
    which needs them, fails rather than passing unmeasured."""
    from unierase.registry.gate import check_gate, erasure_metrics
    from unierase.stages.erase import erase_stage

    root = chain["root"]
    params = _params(root)
    quiet = params.model_copy(update={"erase": params.erase.model_copy(update={"measure_before": False})})
    forget, retain = root / "forget-0.jsonl", root / "retain.jsonl"
    kept = erase_stage(forget, tmp_path / "with", params, chain["dirs"]["1"], retain, cache_dir=root / "cache")
    quick = erase_stage(forget, tmp_path / "without", quiet, chain["dirs"]["1"], retain, cache_dir=root / "cache")
    assert quick["before"] is None and quick["items"]["before"] is None
    assert "measure_before_s" not in quick["timings_s"] and "measure_before_s" in kept["timings_s"]
    assert quick["after"] == kept["after"] and quick["delta_sha256"] == kept["delta_sha256"]
    metrics = erasure_metrics(quick)
    assert "retain_ratio" not in metrics and "retain_ratio" in erasure_metrics(kept)
    gate = check_gate(metrics, params.gate)
    assert not gate.passed and any("retain_ratio" in failure for failure in gate.failures)


def test_changed_cache_entry_is_rebuilt(chain, tmp_path: Path) -> None:
    from unierase.registry.rebuild import materialize

    chain["env"].setenv("UNIERASE_MODEL_CACHE", str(tmp_path / "models"))
    built = materialize(chain["client"], chain["name"], "3")
    weights = built / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    again = materialize(chain["client"], chain["name"], "3")
    assert model_dir_sha256(again) == model_dir_sha256(chain["dirs"]["3"])


def test_missing_statistics_are_computed_again(chain, tmp_path: Path) -> None:
    """Version 2 (the first edit) stores its preserved statistics by reference: without the statistics
    cache (another machine), the rebuild computes them again on the base and gets the same bits."""
    from unierase.registry.rebuild import materialize

    chain["env"].setenv("UNIERASE_MODEL_CACHE", str(tmp_path / "models"))
    cached = list((chain["root"] / "cache" / "covariance").glob("*.safetensors"))
    saved = {path: path.read_bytes() for path in cached}
    try:
        for path in cached:
            path.unlink()
        built = materialize(chain["client"], chain["name"], "2")
        assert model_dir_sha256(built) == model_dir_sha256(chain["dirs"]["2"])
        assert len(list((chain["root"] / "cache" / "covariance").glob("*.safetensors"))) == 1  # cached again
    finally:
        for path, data in saved.items():
            path.write_bytes(data)


def _stored_files(chain, version: str) -> dict[str, Path]:
    client, name = chain["client"], chain["name"]
    stored = Path(client.get_model_version_download_uri(name, version).removeprefix("file://"))
    return {str(p.relative_to(stored)): p for p in stored.rglob("*") if p.is_file() and "artifacts" in p.parts}


@pytest.mark.parametrize("version", ["2", "4"])
def test_flipped_byte_in_a_stored_delta_is_refused_by_name(chain, version: str, tmp_path: Path) -> None:
    """Every stored delta file of version 2 (an ancestor of the champion) and of version 4 (the champion)."""
    import mlflow
    from unierase.registry.pyfunc import export_model_dir

    files = {
        k: p
        for k, p in _stored_files(chain, version).items()
        if "/delta/" in k or k.endswith((".json", "key_blocks.safetensors"))
    }
    files = {k: p for k, p in files.items() if "/model/" in k}  # the stored directory, not MLmodel and friends
    assert any("/delta/" in k for k in files) and any(k.endswith("key_blocks.safetensors") for k in files)
    for i, (_key, path) in enumerate(sorted(files.items())):
        chain["env"].setenv("UNIERASE_MODEL_CACHE", str(tmp_path / f"models-{i}"))
        saved = path.read_bytes()
        data = bytearray(saved)
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            pattern = rf"{path.name}[\s\S]*SHA-256"
            with pytest.raises(Exception, match=pattern):
                mlflow.pyfunc.load_model(f"models:/{chain['name']}@champion")
            with pytest.raises(Exception, match=pattern):
                export_model_dir(f"models:/{chain['name']}@champion", tmp_path / f"export-{i}")
            assert not (tmp_path / f"export-{i}").exists()
        finally:
            path.write_bytes(saved)


def test_a_delta_as_large_as_the_model_is_stored_in_full(chain, tmp_path: Path) -> None:
    """A baseline that changes every tensor: the version stores its full directory, and still loads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unierase.model.delta import diff_models, save_delta, snapshot
    from unierase.registry import tags as T
    from unierase.registry.pyfunc import export_model_dir
    from unierase.registry.versions import register_erasure

    parent = chain["dirs"]["4"]
    model = AutoModelForCausalLM.from_pretrained(parent)
    before = snapshot(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3)
    out = tmp_path / "fine-tuned"
    model.save_pretrained(out / "model")
    AutoTokenizer.from_pretrained(parent).save_pretrained(out / "model")
    shutil.copyfile(parent / "edit_state.safetensors", out / "model" / "edit_state.safetensors")
    sha = save_delta(diff_models(before, model), out / "delta.safetensors")
    client, name = chain["client"], chain["name"]
    version = register_erasure(
        client,
        chain["experiment"],
        name,
        out / "model",
        out / "delta.safetensors",
        sha,
        {},
        {},
        [],
        {T.PARENT_VERSION: "4", T.REQUEST_ID: "full-ft", T.STATUS: T.REJECTED},
        chain["root"],
    )
    assert client.get_model_version(name, version).tags[T.STORAGE] == T.FULL
    exported = export_model_dir(f"models:/{name}/{version}", tmp_path / "export")
    assert model_dir_sha256(exported) == model_dir_sha256(out / "model")
