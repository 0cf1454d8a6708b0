"""File-level front door of evaluation: model and data directories in, ``report.json`` and
``items/<split>.jsonl`` out. The CLI (``unierase evaluate``), DVC and Prefect all call `evaluate_stage`.

    unierase evaluate --model DIR --data DIR --output OUT [--retain-eval DIR]
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from unierase.config import Params, config_hash, load_params
from unierase.data.splits import load_splits, split_kind
from unierase.digests import file_sha256
from unierase.evaluation.evaluate import EvalReport, evaluate_model, forget_truth_ratios
from unierase.evaluation.metrics.similarity import load_embedder
from unierase.model.loading import load_configured_model
from unierase.token.vocabulary import unlearning_token_ids

logger = logging.getLogger(__name__)

REPORT_NAME = "report.json"
ITEMS_DIR = "items"
PROTOCOL = {
    "prompt": "chat template on the question alone, add_generation_prompt=True (plain 'Question: ... Answer:' "
    "without a template), as OpenUnlearning",
    "answer_tokens": "answer tokenised alone (add_special_tokens=False), appended to the prompt ids",
    "generation": "greedy",
}


def read_retain_truth_ratios(retain_eval: str | Path, forget_splits: list[str]) -> dict[str, list[float]]:
    """A retain model's per-item truth ratios from a saved evaluation (``items/<split>.jsonl``).

    Raises:
        FileNotFoundError: The evaluation has no items file for any of ``forget_splits``.
    """
    out = {}
    for name in forget_splits:
        path = Path(retain_eval) / ITEMS_DIR / f"{name}.jsonl"
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            out[name] = [r["truth_ratio"] for r in rows if r.get("truth_ratio") is not None]
    if not out:
        raise FileNotFoundError(f"{retain_eval}: no {ITEMS_DIR}/<forget split>.jsonl for {forget_splits}")
    return out


def write_report(report: EvalReport, output_dir: str | Path, provenance: dict[str, Any]) -> Path:
    """Writes ``report.json`` (summary and provenance, no timestamps: equal inputs give equal bytes)
    and ``items/<split>.jsonl``; returns the report path."""
    output_dir = Path(output_dir)
    (output_dir / ITEMS_DIR).mkdir(parents=True, exist_ok=True)
    for name, rows in report.items.items():
        with (output_dir / ITEMS_DIR / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    path = output_dir / REPORT_NAME
    body = {**report.summary(), "provenance": provenance}
    path.write_text(json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def evaluate_stage(
    model_dir: str | Path,
    data_dir: str | Path,
    output_dir: str | Path,
    params: Params | str | Path | None = None,
    retain_eval: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """Evaluates the model in ``model_dir`` on every split of ``data_dir`` and writes the results.

    Args:
        model_dir: A transformers model directory.
        data_dir: A directory of ``*.jsonl`` splits (`unierase.data.splits.load_splits`).
        output_dir: Where ``report.json`` and ``items/`` go.
        params: A `Params`, a ``params.yaml`` path, or None for defaults (``evaluation`` and
            ``token.token_template`` are used).
        retain_eval: For forget quality: a saved evaluation of a retain model (a directory with
            ``items/``) or a retain model directory, evaluated here on the forget splits.
        device: Torch device; CUDA when there is one, else the CPU.
        progress: Show progress bars.

    Returns:
        The path of ``report.json``.
    """
    params = params if isinstance(params, Params) else load_params(params)
    config = params.evaluation
    splits = load_splits(data_dir)
    model, tokenizer = load_configured_model(model_dir, params.model, device)
    token_ids = unlearning_token_ids(tokenizer, params.token.token_template)
    retain_ratios = retain_truth_ratios(retain_eval, splits, params, device, progress)
    embedder = (
        load_embedder(config.embedder_path, device=str(next(model.parameters()).device)) if config.similarity else None
    )
    torch.manual_seed(0)  # greedy decoding draws nothing; fixed anyway so any sampling slip stays reproducible
    report = evaluate_model(
        model,
        tokenizer,
        splits,
        config,
        retain_truth_ratios=retain_ratios,
        unlearn_token_ids=token_ids,
        embedder=embedder,
        progress=progress,
    )
    path = write_report(report, output_dir, evaluation_provenance(model_dir, data_dir, retain_eval, params, token_ids))
    logger.info("evaluation written to %s", path)
    return path


def retain_truth_ratios(
    retain_eval: str | Path | None,
    splits: dict[str, list],
    params: Params,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, list[float]] | None:
    """The retain model's per-item truth ratios on the forget splits, for forget quality: read from a saved
    evaluation, or computed on a retain model directory; None without ``retain_eval``."""
    if retain_eval is None:
        return None
    if (Path(retain_eval) / "config.json").is_file():
        retain_model, retain_tok = load_configured_model(retain_eval, params.model, device)
        return forget_truth_ratios(retain_model, retain_tok, splits, params.evaluation, progress)
    return read_retain_truth_ratios(retain_eval, [n for n in splits if split_kind(n) == "forget"])


def evaluation_provenance(
    model_dir: str | Path, data_dir: str | Path, retain_eval: str | Path | None, params: Params, token_ids: list[int]
) -> dict[str, Any]:
    """What ``report.json`` records of an evaluation's inputs and protocol."""
    config = params.evaluation
    return {
        "model_dir": str(model_dir),
        "data_dir": str(data_dir),
        "data_sha256": {f.stem: file_sha256(f) for f in sorted(Path(data_dir).glob("*.jsonl"))},
        "retain_eval": str(retain_eval) if retain_eval is not None else None,
        "evaluation_config": config.model_dump(mode="json"),
        "config_hash": config_hash(config),
        "unlearn_token_ids": token_ids,
        "protocol": {**PROTOCOL, "max_new_tokens": config.max_new_tokens},
    }
