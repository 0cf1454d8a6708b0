"""Unlearning tasks: learn (or reuse) the unlearning token, apply the edit, evaluate."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from unierase.config import Params
from unierase.faults import fault_point


@task(name="learn-unlearning-token", cache_policy=NO_CACHE)
def learn_token(model_dir: Path, params: Params, cache_dir: Path, retain: Path | None = None) -> Path:
    """The unlearning token of a base model: from the user cache (keyed by the model's digest, the
    token config and the retain questions it draws for ``token.domain_questions``), learned and cached
    first when it is not there or fails its digest."""
    from prefect import get_run_logger

    from unierase.stages.token import ensure_token_stage

    fault_point("token")
    path, learned = ensure_token_stage(Path(model_dir), params, Path(cache_dir), progress=False, retain_path=retain)
    get_run_logger().info("unlearning token %s: %s", "learned" if learned else "reused", path)
    return path


@task(name="erase", cache_policy=NO_CACHE)
def erase(
    forget: Path, retain: Path | None, out_dir: Path, params: Params, model_dir: Path, token: Path | None
) -> Path:
    """Applies the edit to ``model_dir``; returns the output directory (``model/``, delta, ``report.json``)."""
    from unierase.stages.erase import erase_stage

    fault_point("edit")
    erase_stage(Path(forget), Path(out_dir), params, model_dir=Path(model_dir), retain_path=retain, token_path=token)
    return Path(out_dir)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(model_dir: Path, data_dir: Path, out_dir: Path, params: Params) -> Path:
    """Runs the evaluation stage on the edited model; returns the path of its ``report.json``."""
    from unierase.stages.evaluate import evaluate_stage

    fault_point("evaluate")
    return Path(evaluate_stage(Path(model_dir), Path(data_dir), Path(out_dir), params, progress=False))


def has_unlearning_token(model_dir: Path, params: Params) -> bool:
    """True when the model's tokenizer already holds the unlearning token (a version erased before)."""
    from transformers import AutoTokenizer

    from unierase.token.vocabulary import has_unlearning_token as tokenizer_has_token

    return tokenizer_has_token(AutoTokenizer.from_pretrained(model_dir), params.token)
