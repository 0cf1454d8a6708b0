"""Tampered artifacts are refused on load, by a digest mismatch that names the file.

* The token cache (`unierase.stages.token`): a cached token whose bytes changed, whose digest record is
  gone or unreadable is never used; the warning names the file, and the token is learned again.
* The registry (`unierase.registry.pyfunc`): a flipped byte in any stored file of a registered version
  (the base's weights, tokenizer and config; an erasure's stored delta: its weights, edit state and
  recipe) makes `export_model_dir` and `mlflow.pyfunc.load_model` of the erasure fail with a message
  naming the file (digests recorded at registration, `unierase.registry.integrity`; every load rebuilds
  the erasure from the base, `unierase.registry.rebuild`, here with an empty cache of rebuilt models).

    .venv/bin/python -m pytest tests/test_tamper.py
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from unierase.config import Params, RegistryConfig
from unierase.digests import file_sha256
from unierase.stages.token import ensure_token_stage, read_cached_token

TOKEN_PARAMS = Params.model_validate(
    {
        "token": {"stage1_epochs": 1, "stage2_epochs": 0, "robust_epochs": 0, "num_general_questions": 2},
        "edit": {"layers": [1, 2]},
    }
)


def _flip_byte(path: Path, from_end: int = 3) -> None:
    """Changes one byte of the tensor data (the end of a safetensors file, after its header)."""
    data = bytearray(path.read_bytes())
    data[-from_end] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def cached_token(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> tuple[Path, Path]:
    cache = tmp_path_factory.mktemp("token-cache")
    path, learned = ensure_token_stage(tiny_llama_dir, TOKEN_PARAMS, cache, progress=False)
    assert learned and read_cached_token(path) is not None
    return path, cache


@pytest.mark.parametrize("tamper", ["flipped-byte", "record-removed", "record-not-json", "record-digest-changed"])
def test_tampered_cached_token_is_refused(cached_token, tamper: str, caplog: pytest.LogCaptureFixture) -> None:
    path, _ = cached_token
    record = path.with_suffix(".json")
    saved = path.read_bytes(), record.read_bytes()
    try:
        if tamper == "flipped-byte":
            _flip_byte(path)
        elif tamper == "record-removed":
            record.unlink()
        elif tamper == "record-not-json":
            record.write_text("{sha256: ")
        else:
            body = json.loads(record.read_text())
            record.write_text(json.dumps({**body, "sha256": "0" * 64}))
        with caplog.at_level(logging.WARNING, logger="unierase.stages.token"):
            assert read_cached_token(path) is None
        assert str(path) in caplog.text
        expected = {"flipped-byte": "digest mismatch", "record-removed": "no digest record"}.get(tamper, "unusable")
        assert expected in caplog.text
    finally:
        path.write_bytes(saved[0])
        record.write_bytes(saved[1])


def test_tampered_cached_token_is_learned_again(cached_token, tiny_llama_dir: Path, caplog) -> None:
    path, cache = cached_token
    record = json.loads(path.with_suffix(".json").read_text())
    _flip_byte(path)
    with caplog.at_level(logging.WARNING, logger="unierase.stages.token"):
        again, learned = ensure_token_stage(tiny_llama_dir, TOKEN_PARAMS, cache, progress=False)
    assert again == path and learned and "digest mismatch" in caplog.text
    # The file in the cache is a whole token again, with its digest recorded (a new one: the file records
    # how long learning took).
    assert file_sha256(path) == json.loads(path.with_suffix(".json").read_text())["sha256"]
    assert read_cached_token(path) is not None and record["sha256"]


# --- The registry's load path: digests recorded at registration, checked on load ---------------------


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> dict:
    """A registry with the tiny base (version 1) and an erasure of it (version 2, stored as a delta): a
    changed MLP weight, its delta and an edit-state file, registered through the registry's own functions."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unierase.model.delta import diff_models, save_delta, snapshot
    from unierase.registry import tags as T
    from unierase.registry.store import connect, ensure_experiment
    from unierase.registry.versions import register_base, register_erasure

    root = tmp_path_factory.mktemp("tamper")
    config = RegistryConfig()
    client = connect(config, root)
    experiment = ensure_experiment(client, config, root)
    name = "unierase-tamper"
    base = register_base(client, experiment, name, tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    before = snapshot(model)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.add_(0.01)
    edited = root / "edited"
    model.save_pretrained(edited)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(edited)
    from safetensors.torch import save_file

    save_file({"previous_keys.1": torch.zeros(2, 2)}, str(edited / "edit_state.safetensors"))
    delta_path = root / "delta.safetensors"
    sha = save_delta(diff_models(before, model), delta_path)
    tags = {T.PARENT_VERSION: base, T.STATUS: T.ACCEPTED, T.REQUEST_ID: "tamper-1"}
    version = register_erasure(client, experiment, name, edited, delta_path, sha, {}, {}, [], tags, root)
    return {"root": root, "client": client, "name": name, "version": version}


# kind -> (base or erasure version, stored file): the base stores its full directory, the erasure its
# delta (`delta/<file>`: the new bytes of each changed file) and the recipe that rebuilds it.
STORED = {
    "weights": ("base", "model.safetensors"),
    "tokenizer": ("base", "tokenizer.json"),
    "config": ("base", "config.json"),
    "delta": ("erasure", "delta/model.safetensors"),
    "edit-state": ("erasure", "delta/edit_state.safetensors"),
    "recipe": ("erasure", "unierase-delta.json"),
}
KINDS = list(STORED)


@pytest.fixture(autouse=True)
def _empty_model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test rebuilds from the store: a cached rebuilt base would not read the base's files again."""
    monkeypatch.setenv("UNIERASE_MODEL_CACHE", str(tmp_path / "rebuilt"))


def _stored_file(registered: dict, kind: str) -> Path:
    """The stored file of the given kind, in the local artifact store."""
    client, name = registered["client"], registered["name"]
    which, rel = STORED[kind]
    version = registered["version"] if which == "erasure" else "1"
    model_dir = Path(client.get_model_version_download_uri(name, version).removeprefix("file://"))
    return next(p for p in model_dir.rglob(Path(rel).name) if str(p).endswith(rel))


def _tampered(registered: dict, kind: str):
    path = _stored_file(registered, kind)
    saved = path.read_bytes()
    if path.suffix == ".json":
        path.write_text(path.read_text().replace('"', "'", 1) if kind == "config" else path.read_text() + " ")
    else:
        _flip_byte(path)
    return path, saved


@pytest.mark.parametrize("kind", KINDS)
def test_tampered_version_is_not_exported(registered: dict, kind: str, tmp_path: Path) -> None:
    from unierase.registry.pyfunc import export_model_dir

    path, saved = _tampered(registered, kind)
    out = tmp_path / "export"
    try:
        with pytest.raises(
            Exception, match=rf"(?i)(digest|sha-?256)[\s\S]*{path.name}|{path.name}[\s\S]*(digest|sha-?256)"
        ):
            export_model_dir(f"models:/{registered['name']}/{registered['version']}", out)
        assert not out.exists()
    finally:
        path.write_bytes(saved)


@pytest.mark.parametrize("kind", KINDS)
def test_tampered_version_is_not_loaded(registered: dict, kind: str) -> None:
    import mlflow

    path, saved = _tampered(registered, kind)
    try:
        with pytest.raises(
            Exception, match=rf"(?i)(digest|sha-?256)[\s\S]*{path.name}|{path.name}[\s\S]*(digest|sha-?256)"
        ):
            mlflow.pyfunc.load_model(f"models:/{registered['name']}/{registered['version']}")
    finally:
        path.write_bytes(saved)


@pytest.mark.parametrize("kind", KINDS)
def test_every_artifact_kind_is_stored(registered: dict, kind: str) -> None:
    """The files the tamper tests change exist (so an expected failure above is the load path's)."""
    assert _stored_file(registered, kind).is_file()


def test_untampered_version_loads(registered: dict, tmp_path: Path) -> None:
    """The control: the same version, untouched, exports and loads."""
    import mlflow
    from unierase.registry.pyfunc import export_model_dir

    uri = f"models:/{registered['name']}/{registered['version']}"
    assert (export_model_dir(uri, tmp_path / "export") / "config.json").is_file()
    assert len(mlflow.pyfunc.load_model(uri).predict(["What is the capital of Peru?"])) == 1
