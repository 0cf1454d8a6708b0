"""Front door of Phase I: learn the unlearning token of a base model, and the one cache of learned tokens.

    unierase learn-token --model DIR --output TOKEN.safetensors

A token depends on the base model, the token config and, with ``token.domain_questions``, the retain
questions it was also trained on, never on a forget set, so it is learned once and kept under the user
cache (``tokens/<model digest>-<config hash>[-<questions digest>].safetensors``), with a record of its
SHA-256 beside it. The CLI, the flow and the benchmarks all reuse it from there; a file that is
missing, unreadable or fails its digest is learned again. An erased model carries its token, so later
requests on it never learn one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.atomic import atomic_file, write_text_atomic
from unierase.config import Params, config_hash
from unierase.data.facts import load_facts
from unierase.digests import file_sha256, model_dir_sha256
from unierase.model.loading import load_configured_model
from unierase.stages.artifacts import load_token, save_token
from unierase.token.learning import learn_token, token_training_questions
from unierase.token.vocabulary import UnlearningToken, has_unlearning_token

logger = logging.getLogger(__name__)


def token_cache_path(cache_dir: str | Path, model_digest: str, params: Params, domain: Sequence[str] = ()) -> Path:
    """Where the token of a base model (by its directory digest), token config and the retain questions
    Phase I draws from ``domain`` (`token_training_questions`) is cached."""
    name = f"{model_digest[:16]}-{config_hash(params.token)[:16]}"
    if drawn := token_training_questions(params, domain)[params.token.num_general_questions :]:
        name += "-" + hashlib.sha256("\n".join(drawn).encode("utf-8")).hexdigest()[:16]
    return Path(cache_dir) / "tokens" / f"{name}.safetensors"


def retain_questions(retain_path: str | Path | None, params: Params | None = None) -> list[str]:
    """The questions of a retain file (none without one): what ``token.domain_questions`` draws from.
    With ``params`` asking for none, the file is not read."""
    if not retain_path or (params is not None and not params.token.domain_questions):
        return []
    return [fact.question for fact in load_facts(retain_path)]


def _record_path(path: Path) -> Path:
    return path.with_suffix(".json")


def read_cached_token(path: Path) -> UnlearningToken | None:
    """The token at ``path`` when it is there and its bytes match the SHA-256 recorded beside it."""
    record = _record_path(path)
    if not path.is_file():
        return None
    if not record.is_file():
        logger.warning("cached token %s has no digest record %s; learning it again", path, record.name)
        return None
    try:
        expected = json.loads(record.read_text(encoding="utf-8"))["sha256"]
        if (actual := file_sha256(path)) != expected:
            raise ValueError(f"digest mismatch: SHA-256 {actual[:12]}... is not the recorded {expected[:12]}...")
        return load_token(path)
    except (ValueError, KeyError, TypeError, OSError) as err:  # safetensors and json raise ValueError subclasses
        logger.warning("cached token %s is unusable (%s); learning it again", path, err)
        return None


def store_cached_token(token: UnlearningToken, path: Path) -> Path:
    """Writes the token and its digest record; the token file appears only once it is complete."""
    with atomic_file(path) as tmp:
        save_token(token, tmp)
        record = {"sha256": file_sha256(tmp), "seconds": token.seconds, "losses": token.losses}
        write_text_atomic(_record_path(path), json.dumps(record, indent=2) + "\n")
    return path


def cached_token(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    model_dir: str | Path,
    params: Params,
    cache_dir: str | Path,
    progress: bool = True,
    domain: Sequence[str] = (),
) -> tuple[UnlearningToken, bool]:
    """The token of the base model in ``model_dir`` (loaded as ``model``), with ``domain``'s questions
    for ``token.domain_questions``: from the cache, or learned on ``model`` now and cached. Returns the
    token and whether it was learned now."""
    path = token_cache_path(cache_dir, model_dir_sha256(model_dir), params, domain)
    token = read_cached_token(path)
    if token is not None:
        logger.info("unlearning token reused from %s", path)
        return token, False
    token = learn_token(model, tokenizer, params, progress, domain)
    store_cached_token(token, path)
    logger.info("unlearning token learned in %.1fs and cached at %s", token.seconds, path)
    return token, True


def ensure_token_stage(
    model_dir: str | Path,
    params: Params,
    cache_dir: str | Path,
    progress: bool = True,
    retain_path: str | Path | None = None,
) -> tuple[Path, bool]:
    """The cached token file of a base model (with ``retain_path``'s questions for
    ``token.domain_questions``), learned first when the cache has none (the model is loaded only then).
    Returns its path and whether it was learned now."""
    domain = retain_questions(retain_path, params)
    path = token_cache_path(cache_dir, model_dir_sha256(model_dir), params, domain)
    if read_cached_token(path) is not None:
        return path, False
    model, tokenizer = load_configured_model(model_dir, params.model)
    if has_unlearning_token(tokenizer, params.token):
        raise ValueError(f"{model_dir} already has the unlearning token; erase on it directly")
    store_cached_token(learn_token(model, tokenizer, params, progress, domain), path)
    return path, True


def learn_token_stage(
    model_dir: str | Path,
    output: str | Path,
    params: Params,
    progress: bool = True,
    retain_path: str | Path | None = None,
) -> Path:
    """Learns the unlearning token for a base model (with ``retain_path``'s questions for
    ``token.domain_questions``) and writes it as a small safetensors file.

    Returns:
        ``output``.
    """
    domain = retain_questions(retain_path, params)
    model, tokenizer = load_configured_model(model_dir, params.model)
    if has_unlearning_token(tokenizer, params.token):
        raise ValueError(f"{model_dir} already has the unlearning token; erase on it directly")
    save_token(learn_token(model, tokenizer, params, progress, domain), output)
    return Path(output)
