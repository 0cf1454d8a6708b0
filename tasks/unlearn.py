"""Unlearning tasks: learn (or reuse) the unlearning token, apply the edit, evaluate."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from unierase.config import Params, config_hash


def token_artifact_path(out_root: Path, model_digest: str, params: Params) -> Path:
    """Where the token learned for a base model and token config lives: one file per (model, config)."""
    return Path(out_root) / f"{model_digest[:16]}-{config_hash(params.token)[:16]}" / "token.safetensors"


def _token_cache_key(context: TaskRunContext, parameters: dict) -> str:
    """Same base model, token config and token folder -> same token (the flow refreshes the cache if the
    file is gone). The folder is part of the key: a cached result is a path, and another repo's path
    (a deleted temporary checkout) must never be handed to this one."""
    path = token_artifact_path(parameters["out_root"], parameters["model_digest"], parameters["params"])
    folder = hashlib.sha256(str(Path(parameters["out_root"]).resolve()).encode()).hexdigest()[:12]
    return f"unierase-token-{path.parent.name}-{folder}"


@task(name="learn-unlearning-token", cache_key_fn=_token_cache_key, persist_result=True)
def learn_token(model_dir: Path, model_digest: str, params: Params, out_root: Path) -> Path:
    """Learns the unlearning token for a base model (cached on the model's digest and the token config);
    a token file already learned for them is reused even without a cache record."""
    from unierase.stages.erase import learn_token_stage

    out = token_artifact_path(out_root, model_digest, params)
    if out.is_file():
        return out
    return Path(learn_token_stage(Path(model_dir), out, params))


@task(name="erase", cache_policy=NO_CACHE)
def erase(
    forget: Path, retain: Path | None, out_dir: Path, params: Params, model_dir: Path, token: Path | None
) -> Path:
    """Applies the edit to ``model_dir``; returns the output directory (``model/``, delta, ``report.json``)."""
    from unierase.stages.erase import erase_stage

    erase_stage(Path(forget), Path(out_dir), params, model_dir=Path(model_dir), retain_path=retain, token_path=token)
    return Path(out_dir)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(model_dir: Path, data_dir: Path, out_dir: Path, params: Params) -> Path:
    """Runs the evaluation stage on the edited model; returns the path of its ``report.json``."""
    from unierase.stages.evaluate import evaluate_stage

    return Path(evaluate_stage(Path(model_dir), Path(data_dir), Path(out_dir), params, progress=False))


def has_unlearning_token(model_dir: Path, params: Params) -> bool:
    """True when the model's tokenizer already holds the unlearning token (a version erased before)."""
    names = {params.token.token_template.format(i) for i in range(params.token.num_tokens)}
    tokenizer_file = Path(model_dir) / "tokenizer.json"
    if not tokenizer_file.is_file():
        return False
    added = {t.get("content") for t in json.loads(tokenizer_file.read_text(encoding="utf-8")).get("added_tokens", [])}
    return names <= added
