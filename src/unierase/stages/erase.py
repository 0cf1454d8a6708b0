"""File-level front doors: load, call the core, save. The CLI, the DVC stages and the Prefect tasks
all call these, and pass paths, never models.

    learn_token_stage(model_dir, token_path, params)          -> token file
    erase_stage(forget_path, out_dir, params, model_dir=...)  -> out_dir/{model/, delta.safetensors, report.json}
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import Params
from unierase.data.facts import load_facts
from unierase.edit.erasure import erase_facts
from unierase.edit.state import load_state, save_state
from unierase.evaluation.answers import measure_answers
from unierase.model.default import default_cache_dir, ensure_default_model
from unierase.model.delta import diff_models, save_delta, snapshot
from unierase.stages.statistics import cached_preserved_moments
from unierase.token.learning import (
    install_unlearning_token,
    load_token,
    save_token,
    token_names,
)
from unierase.token.recipe import learn_token

logger = logging.getLogger(__name__)

STATE_FILE = "edit_state.safetensors"


def load_model(model_dir: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer from a local directory, in float32 on the CPU (or the GPU when
    there is one), with a pad token for batched generation."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    return model, tokenizer


def has_unlearning_token(tokenizer: PreTrainedTokenizerBase, params: Params) -> bool:
    """True when the tokenizer already carries the unlearning token(s) (an erased model)."""
    vocab = tokenizer.get_vocab()
    return all(name in vocab for name in token_names(params.token))


def learn_token_stage(model_dir: str | Path, output: str | Path, params: Params, progress: bool = True) -> Path:
    """Learns the unlearning token for a base model and writes it as a small safetensors file.

    Returns:
        ``output``.
    """
    model, tokenizer = load_model(model_dir)
    if has_unlearning_token(tokenizer, params):
        raise ValueError(f"{model_dir} already has the unlearning token; erase on it directly")
    token = learn_token(model, tokenizer, params, progress)
    save_token(token, output)
    return Path(output)


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
    full transformers directory, tokenizer and edit state included), ``output_dir/delta.safetensors``
    and ``output_dir/report.json``.

    Args:
        forget_path: JSONL of facts to erase; in sequential mode a list of files, one request each
            (a single path, not in a list, is one request per row).
        output_dir: Where to write; must not exist or be empty.
        params: Configuration.
        model_dir: Model to erase from (the embedded default when None). A model erased before
            carries its token and edit state, and the new erasure continues its sequence.
        retain_path: JSONL of facts to keep (measured before/after; protected in the edit).
        token_path: A learned token for this base (from `learn_token_stage`); learned here if None.
        cache_dir: Cache of preserved-key statistics (``~/.cache/unierase`` by default).
        progress: Show progress bars.

    Returns:
        The report, as written to ``report.json``.
    """
    from unierase.methods import METHODS

    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"{output_dir} exists and is not empty; choose a new output directory")
    method = params.erase.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    paths = forget_path if isinstance(forget_path, list) else [forget_path]
    requests = [load_facts(p) for p in paths]
    if params.erase.mode == "sequential" and not isinstance(forget_path, list):
        requests = [[fact] for fact in requests[0]]
    elif params.erase.mode != "sequential" and len(requests) > 1:
        raise ValueError("several forget files are several requests: use --mode sequential")
    forget = [fact for request in requests for fact in request]
    retain = load_facts(retain_path) if retain_path else []
    model_dir = Path(model_dir) if model_dir else ensure_default_model()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()

    timings: dict[str, float] = {}
    started = time.perf_counter()
    model, tokenizer = load_model(model_dir)
    timings["load_s"] = time.perf_counter() - started
    base = snapshot(model)
    had_token = has_unlearning_token(tokenizer, params)
    token_ids = tokenizer.convert_tokens_to_ids(token_names(params.token)) if had_token else []

    started = time.perf_counter()
    before = measure_answers(model, tokenizer, forget, retain, token_ids, params.erase.max_new_tokens, progress)
    timings["measure_before_s"] = time.perf_counter() - started

    state = load_state(model_dir / STATE_FILE) if (model_dir / STATE_FILE).exists() else None
    subjects: list[str] = []
    diagnostics: dict = {}
    if method == "unierase":
        started = time.perf_counter()
        if not had_token:
            token = load_token(token_path) if token_path else learn_token(model, tokenizer, params, progress)
            install_unlearning_token(model, tokenizer, token)
        timings["token_s"] = time.perf_counter() - started
        started = time.perf_counter()
        if state is not None and all(layer in state.preserved for layer in params.edit.layers):
            # A later request on an edited model: AlphaEdit keeps the projection of the unedited model,
            # which the edit state carries, so the statistics are not recomputed (on the edited weights
            # they would miss the cache every time). Held-out drift is then not measured.
            preserved, heldout, info = state.preserved, None, {"from_edit_state": True, "cache_hit": True}
        else:
            preserved, heldout, info = cached_preserved_moments(model, tokenizer, params, cache_dir, progress)
        timings["covariance_s"] = time.perf_counter() - started
        diagnostics["covariance"] = info
        for request in requests:
            result = erase_facts(
                model, tokenizer, request, params, preserved, retain, state, heldout=heldout, progress=progress
            )
            state = result.state
            subjects += result.subjects
            for key, seconds in result.timings.items():
                timings[key] = timings.get(key, 0.0) + seconds
            diagnostics.setdefault("layers", []).append([vars(layer) for layer in result.outcome.layers])
            diagnostics.setdefault("value_nll", []).append(result.outcome.value_losses)
            diagnostics.setdefault("value_rounds", []).append(result.outcome.value_rounds)
    else:
        started = time.perf_counter()
        METHODS[method](model, tokenizer, forget, retain, params)
        timings["unlearn_s"] = time.perf_counter() - started

    token_ids = (
        tokenizer.convert_tokens_to_ids(token_names(params.token)) if has_unlearning_token(tokenizer, params) else []
    )
    started = time.perf_counter()
    after = measure_answers(model, tokenizer, forget, retain, token_ids, params.erase.max_new_tokens, progress)
    timings["measure_after_s"] = time.perf_counter() - started

    delta = diff_models(base, model, metadata={"method": method, "mode": params.erase.mode})
    total = sum(p.numel() for p in base.values())
    report = {
        "method": method,
        "mode": params.erase.mode,
        "model_dir": str(model_dir),
        "num_requests": len(requests),
        "num_forget": len(forget),
        "num_retain": len(retain),
        "subjects": subjects,
        "before": before.summary(),
        "after": after.summary(),
        "params_changed": delta.num_changed(),
        "params_total": total,
        "params_changed_share": delta.num_changed() / total,
        "changed_tensors": delta.names,
        "edit_state_requests": state.num_requests if state else 0,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "diagnostics": diagnostics,
        "items": {"before": before.items(), "after": after.items()},
    }
    _write_outputs(output_dir, model, tokenizer, delta, state, report)
    return report


def _write_outputs(output_dir: Path, model, tokenizer, delta, state, report: dict) -> None:
    """Writes everything into a sibling temporary directory, then moves it into place."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}-"))
    try:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "model")
        if state is not None:
            save_state(state, tmp / "model" / STATE_FILE)
        report["delta_sha256"] = save_delta(delta, tmp / "delta.safetensors")
        report["delta_bytes"] = (tmp / "delta.safetensors").stat().st_size
        (tmp / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        if output_dir.exists():
            output_dir.rmdir()
        tmp.rename(output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
