"""Front door of an erasure: forget/retain files and a model directory in, the erased model, its weight
delta and a report out. The CLI, the DVC ``erase`` stage and the Prefect task all call `erase_stage`.

    unierase erase --forget FORGET.jsonl --retain RETAIN.jsonl --output OUT
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import Params
from unierase.data.facts import Fact, fact_lines, load_facts
from unierase.edit.subject import attach_subjects
from unierase.evaluation.answers import AnswerSnapshot, measure_answers
from unierase.methods import build_method
from unierase.methods.base import Supplies
from unierase.model.default import default_cache_dir, ensure_default_model
from unierase.model.delta import WeightDelta, diff_models, save_delta, snapshot
from unierase.model.loading import check_model_dir, load_configured_model
from unierase.stages.artifacts import KEY_BLOCKS_FILE, STATE_FILE, load_state, load_token, save_key_blocks, save_state
from unierase.stages.statistics import cached_preserved_moments
from unierase.stages.subjects import attach_retain_subjects, subject_cache_path
from unierase.stages.token import cached_token
from unierase.token.vocabulary import unlearning_token_ids

logger = logging.getLogger(__name__)


def read_requests(forget_path: str | Path | list[str | Path], mode: str) -> list[list[Fact]]:
    """The requests of a run: one per file, or, in sequential mode with one file, one per row."""
    paths = forget_path if isinstance(forget_path, list) else [forget_path]
    requests = [load_facts(p) for p in paths]
    if mode == "sequential" and not isinstance(forget_path, list):
        return [[fact] for fact in requests[0]]
    if mode != "sequential" and len(requests) > 1:
        raise ValueError("several forget files are several requests: use --mode sequential")
    return requests


def erase_stage(
    forget_path: str | Path | list[str | Path],
    output_dir: str | Path,
    params: Params,
    model_dir: str | Path | None = None,
    retain_path: str | Path | None = None,
    token_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """One erasure run from files to files.

    Writes, all at once at the end (a failed run leaves nothing behind), ``output_dir/model/`` (a
    full transformers directory, tokenizer and edit state included), ``output_dir/delta.safetensors``,
    ``output_dir/report.json`` and, after an edit that keeps a state, ``output_dir/key_blocks.safetensors``.

    Args:
        forget_path: JSONL of facts to erase; in sequential mode a list of files, one request each
            (a single path, not in a list, is one request per row).
        output_dir: Where to write; must not exist or be empty.
        params: Configuration.
        model_dir: Model to erase from (the embedded default when None). A model erased before
            carries its token and edit state, and the new erasure continues its sequence.
        retain_path: JSONL of facts to keep (measured before/after; protected in the edit).
        token_path: A learned token for this base (from `learn_token_stage`); else the cached token of
            this base model, learned and cached on the first run.
        cache_dir: Cache of tokens and preserved-key statistics (``~/.cache/unierase`` by default).
        progress: Show progress bars.

    Returns:
        The report, as written to ``report.json``.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"{output_dir} exists and is not empty; choose a new output directory")
    method = build_method(params.erase.method, params, progress)
    requests = read_requests(forget_path, params.erase.mode)
    forget = [fact for request in requests for fact in request]
    retain = load_facts(retain_path) if retain_path else []
    model_dir = check_model_dir(model_dir) if model_dir else ensure_default_model()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()

    timings: dict[str, float] = {}
    started = time.perf_counter()
    model, tokenizer = load_configured_model(model_dir, params.model)
    timings["load_s"] = time.perf_counter() - started
    base = snapshot(model)
    token_ids = unlearning_token_ids(tokenizer, params.token.token_template)

    subject_methods: dict[str, dict[str, int]] = {}
    if method.keys_at_subjects:
        # Before any expensive phase: a row without a usable subject fails in seconds, not after the
        # token and the statistics.
        started = time.perf_counter()
        requests, retain, subject_methods = _attach_subjects(
            model, tokenizer, requests, retain, forget_path, retain_path, params, model_dir, cache_dir
        )
        forget = [fact for request in requests for fact in request]
        timings["find_subjects_s"] = time.perf_counter() - started

    def answers(ids: list[int]) -> AnswerSnapshot:
        """Every forget and retain question answered as served, ``ids`` the unlearning tokens."""
        after_token, length = params.evaluation.after_token, params.erase.max_new_tokens
        return measure_answers(model, tokenizer, forget, retain, ids, length, after_token, progress)

    before = None
    if params.erase.measure_before:
        started = time.perf_counter()
        before = answers(token_ids)
        timings["measure_before_s"] = time.perf_counter() - started

    learned: list[bool] = []

    def token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase):
        if token_path:
            return load_token(token_path)
        domain = [fact.question for fact in retain]
        found, fresh = cached_token(model, tokenizer, model_dir, params, cache_dir, progress, domain)
        learned.append(fresh)
        return found

    supplies = Supplies(
        token=token,
        statistics=lambda model, tokenizer: cached_preserved_moments(model, tokenizer, params, cache_dir, progress),
        state=load_state(model_dir / STATE_FILE) if (model_dir / STATE_FILE).exists() else None,
    )
    method.prepare(model, tokenizer, supplies)
    for request in requests:
        method.apply(model, tokenizer, request, retain)
    done = method.report()
    timings.update(done.timings)

    token_ids = unlearning_token_ids(tokenizer, params.token.token_template)
    started = time.perf_counter()
    after = answers(token_ids)
    timings["measure_after_s"] = time.perf_counter() - started

    delta = diff_models(base, model, metadata={"method": params.erase.method, "mode": params.erase.mode})
    total = sum(p.numel() for p in base.values())
    report = {
        "method": params.erase.method,
        "mode": params.erase.mode,
        "model_dir": str(model_dir),
        "num_requests": len(requests),
        "num_forget": len(forget),
        "num_retain": len(retain),
        "subjects": done.subjects,
        "subject_methods": subject_methods,
        "token_learned": any(learned),
        "before": before.summary() if before else None,
        "after": after.summary(),
        "params_changed": delta.num_changed(),
        "params_total": total,
        "params_changed_share": delta.num_changed() / total,
        "changed_tensors": delta.names,
        "edit_state_requests": done.state.num_requests if done.state else 0,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "diagnostics": done.diagnostics,
        "items": {"before": before.items() if before else None, "after": after.items()},
    }
    covariance = done.diagnostics.get("covariance") or {}
    preserved = None
    if covariance.get("cache_key") and not covariance.get("from_edit_state"):
        settings = {
            "covariance": params.covariance.model_dump(mode="json"),
            "model": params.model.model_dump(mode="json"),
            "edit": {"layers": sorted(params.edit.layers)},
        }
        preserved = (covariance["cache_key"], settings)
    _write_outputs(output_dir, model, tokenizer, delta, done.state, report, preserved)
    return report


def _attach_subjects(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    requests: list[list[Fact]],
    retain: list[Fact],
    forget_path: str | Path | list[str | Path],
    retain_path: str | Path | None,
    params: Params,
    model_dir: Path,
    cache_dir: Path,
) -> tuple[list[list[Fact]], list[Fact], dict[str, dict[str, int]]]:
    """Every forget and retain fact with a checked subject, errors naming rows as ``file:line``, and
    how many subjects each way was chosen (given, traced, traced:last-name, fallback:...;
    ``retain_cached``: how many of the retain set's came from the subject cache,
    `unierase.stages.subjects`)."""
    paths = forget_path if isinstance(forget_path, list) else [forget_path]
    rows = [f"{path}:{line}" for path in paths for line in fact_lines(path)]
    flat, found = attach_subjects(
        model, tokenizer, [fact for request in requests for fact in request], params.edit.subject_max_words, rows
    )
    methods = {"forget": dict(Counter(choice.method for choice in found))}
    regrouped, start = [], 0
    for request in requests:
        regrouped.append(flat[start : start + len(request)])
        start += len(request)
    if retain:
        rows = [f"{retain_path}:{line}" for line in fact_lines(retain_path)]
        unlabelled = any(not fact.subject for fact in retain)
        cache = subject_cache_path(cache_dir, model_dir, params) if unlabelled else None
        if cache is None:
            retain, found = attach_subjects(model, tokenizer, retain, params.edit.subject_max_words, rows)
            hits = 0
        else:
            retain, found, hits = attach_retain_subjects(model, tokenizer, retain, rows, params, cache)
        methods["retain"] = dict(Counter(choice.method for choice in found))
        methods["retain_cached"] = {"cached": hits}
    logger.info("subjects chosen: %s", methods)  # counts only: subjects are forget text
    return regrouped, retain, methods


def _write_outputs(
    output_dir: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    delta: WeightDelta,
    state,
    report: dict,
    preserved: tuple[str, dict] | None = None,
) -> None:
    """Writes everything into a sibling temporary directory, then moves it into place. With an edit
    state, the keys of this run's requests go to ``key_blocks.safetensors`` (the registry stores them)."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}-"))
    try:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "model")
        if state is not None:
            save_state(state, tmp / "model" / STATE_FILE)
            if state.key_factors:
                key, settings = preserved or (None, None)
                save_key_blocks(state.key_factors, tmp / KEY_BLOCKS_FILE, key, settings)
        report["delta_sha256"] = save_delta(delta, tmp / "delta.safetensors")
        report["delta_bytes"] = (tmp / "delta.safetensors").stat().st_size
        (tmp / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        if output_dir.exists():
            output_dir.rmdir()
        tmp.rename(output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
