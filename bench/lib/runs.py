"""Running and scoring methods the same way for every benchmark part.

UniErase runs through `unierase.stages.erase.erase_stage` (the file-level front door the CLI and the flow
use); the baselines through their registry (`unierase.methods.METHODS`) on a model in memory; every
model is scored by `Evaluator`, i.e. `unierase.evaluation.evaluate.evaluate_model` with the leak audits, the
retain model's truth ratios and one embedder shared across methods.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import FinetuneConfig, Params, config_hash
from unierase.data.facts import Fact
from unierase.data.splits import split_kind
from unierase.evaluation.evaluate import FORGET_EFFICACY_METRICS, EvalReport, evaluate_model
from unierase.evaluation.leak_audits import AUDIT_PREFIX
from unierase.evaluation.metrics.aggregates import forget_efficacy
from unierase.evaluation.metrics.similarity import load_embedder
from unierase.model.delta import diff_models, file_sha256
from unierase.stages.evaluate import PROTOCOL, write_report
from unierase.stages.finetune import finetune_stage
from unierase.token.vocabulary import unlearning_token_ids

logger = logging.getLogger(__name__)

AGGREGATES = ("forget_efficacy", "model_ability", "forget_quality", "model_utility")


def ensure_finetuned(
    base_dir: str | Path,
    data: str | Path,
    output_dir: str | Path,
    config: FinetuneConfig,
    device: str | None = None,
    progress: bool = True,
) -> tuple[Path, bool]:
    """A model fine-tuned on ``data``: reused when ``output_dir/finetune.json`` records the same base,
    data digest and config hash, else trained (`unierase.stages.finetune.finetune_stage`).

    Returns:
        The model directory and whether it was reused.
    """
    output_dir = Path(output_dir)
    record = output_dir / "finetune.json"
    if record.is_file():
        done = json.loads(record.read_text(encoding="utf-8"))
        if (done.get("base_model"), done.get("data_sha256"), done.get("config_hash")) == (
            str(base_dir),
            file_sha256(data),
            config_hash(config),
        ):
            logger.info("reusing the fine-tuned model in %s", output_dir)
            return output_dir, True
    return finetune_stage(base_dir, data, output_dir, config, device=device, progress=progress), False


class Evaluator:
    """One evaluation protocol for every method of a run: settings, retain-model truth ratios and the
    sentence embedder are fixed once.

    Args:
        params: ``evaluation`` and ``token.token_template`` are used.
        device: Device of the embedder (the models' device).
        progress: Show progress bars.
    """

    def __init__(self, params: Params, device: str | None = None, progress: bool = True) -> None:
        self.params = params
        self.progress = progress
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        config = params.evaluation
        self.embedder = load_embedder(config.embedder_path, device=device) if config.similarity else None

    def evaluate(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        splits: Mapping[str, Sequence[Fact]],
        retain_truth_ratios: Mapping[str, Sequence[float]] | None = None,
        output_dir: str | Path | None = None,
        provenance: dict[str, Any] | None = None,
        text_free: Collection[str] = (),
    ) -> EvalReport:
        """Evaluates a model on ``splits``; with ``output_dir``, writes ``report.json`` and the per-item
        rows (``items/<split>.jsonl``) as `unierase.stages.evaluate` does, the rows of the splits named in
        ``text_free`` with their scores only (`scores_only`)."""
        token_ids = unlearning_token_ids(tokenizer, self.params.token.token_template)
        torch.manual_seed(0)  # as evaluate_stage: greedy decoding draws nothing, fixed anyway
        report = evaluate_model(
            model,
            tokenizer,
            splits,
            self.params.evaluation,
            retain_truth_ratios=retain_truth_ratios,
            unlearn_token_ids=token_ids,
            embedder=self.embedder,
            progress=self.progress,
        )
        if output_dir is not None:
            record = {
                **(provenance or {}),
                "evaluation_config": self.params.evaluation.model_dump(mode="json"),
                "config_hash": config_hash(self.params.evaluation),
                "unlearn_token_ids": token_ids,
                "protocol": {**PROTOCOL, "max_new_tokens": self.params.evaluation.max_new_tokens},
            }
            items = {n: scores_only(rows) if n in text_free else rows for n, rows in report.items.items()}
            write_report(dataclasses.replace(report, items=items), output_dir, record)
        return report


def scores_only(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Item rows without their text: the numbers and flags of each row, in item order. Results written
    under ``--out`` are committed; a split read from ``../shared/tofu`` must not put TOFU's questions,
    answers, or generations that may repeat them, into the project."""
    return [{k: v for k, v in row.items() if v is None or isinstance(v, (bool, int, float))} for row in rows]


def evaluation_fields(report: EvalReport) -> dict[str, Any]:
    """An evaluation as flat row fields: the four aggregates, the forget splits' means, and every
    numeric leak-audit figure as ``audit_<audit>_<figure>`` (a skipped audit as ``audit_<audit>_skipped``;
    with several forget splits, figures are averaged over them)."""
    fields: dict[str, Any] = {k: report.aggregates.get(k) for k in AGGREGATES}
    forget = [name for name, s in report.splits.items() if s["kind"] == "forget"]
    for metric in ("rougeL_recall", "prob", "truth_ratio"):
        values = [report.splits[n][metric] for n in forget if report.splits[n].get(metric) is not None]
        fields[f"forget_{metric}"] = sum(values) / len(values) if values else None
    figures: dict[str, list[float]] = {}
    for name in forget:
        for audit, summary in report.audits.get(name, {}).items():
            if "skipped" in summary:
                fields[f"audit_{audit}_skipped"] = summary["skipped"]
                continue
            for key, value in summary.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    figures.setdefault(f"audit_{audit}_{key}", []).append(float(value))
    fields.update({k: sum(v) / len(v) for k, v in figures.items()})
    return fields


def split_forget_efficacy(report: EvalReport, split: str) -> float | None:
    """UniErase's forget efficacy of one forget split alone (the same metrics as the aggregate)."""
    value, _ = forget_efficacy({split: report.splits[split]}, {split: split_kind(split)}, FORGET_EFFICACY_METRICS)
    return value


def apply_baseline(
    name: str,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    forget: list[Fact],
    retain: list[Fact],
    params: Params,
    progress: bool = True,
) -> None:
    """Runs the registered baseline ``name`` on the model in place (``progress``: its step bar)."""
    from unierase.methods import BASELINE_NAMES, build_method

    if name not in BASELINE_NAMES:
        raise ValueError(f"unknown baseline {name!r}; choose from {sorted(BASELINE_NAMES)}")
    build_method(name, params, progress).apply(model, tokenizer, forget, retain)


def changed_parameters(before: Mapping[str, torch.Tensor], model: PreTrainedModel) -> dict[str, float]:
    """How many scalar parameters differ from a snapshot (`unierase.model.delta.snapshot`), and their share."""
    delta = diff_models(dict(before), model)
    total = sum(p.numel() for p in before.values())
    changed = delta.num_changed()
    return {"params_changed": changed, "params_total": total, "params_changed_share": changed / total}


def unierase_seconds(report: Mapping[str, Any]) -> float:
    """The unlearning time of an `erase_stage` report: token install, preserved-key statistics, subjects,
    projection and edit (not loading, the before/after answers or saving)."""
    phases = ("find_subjects_s", "token_s", "covariance_s", "subjects_s", "projection_s", "edit_s")
    return float(sum(report["timings_s"].get(k, 0.0) for k in phases))


def ensure_token(
    model_dir: str | Path,
    cache_dir: str | Path,
    params: Params,
    progress: bool = True,
    retain: str | Path | None = None,
) -> tuple[Path, dict[str, Any]]:
    """The unlearning token of a model from the one token cache (`unierase.stages.token`), learned there
    on first use (with ``retain``'s questions for ``token.domain_questions``). What learning it cost (seconds, peak RSS) is kept beside it, so a reused token still
    reports what learning it took.

    Returns:
        The token file and the measurement of its learning (``reused`` says whether it was learned earlier).
    """
    from bench.lib.measure import measure
    from unierase.stages.token import ensure_token_stage

    with measure() as m:
        path, learned = ensure_token_stage(model_dir, params, cache_dir, progress=progress, retain_path=retain)
    record = path.with_suffix(".measurement.json")
    if learned or not record.is_file():
        record.write_text(json.dumps(m.as_dict(), indent=2) + "\n", encoding="utf-8")
    return path, {**json.loads(record.read_text(encoding="utf-8")), "reused": not learned}


# Item-row columns holding a ROUGE-L recall against the true answer: the main generation and each
# generation audit (see `unierase.evaluation.leak_audits`).
LEAK_COLUMNS = {"generation": "rougeL_recall", **{a: f"{p}_rougeL_recall" for a, p in AUDIT_PREFIX.items()}}


def leaked_items(items: Sequence[Mapping[str, Any]], threshold: float) -> dict[str, int]:
    """How many forget items still give the answer (ROUGE-L recall at least ``threshold``) in the main
    generation and under each audit that ran, and under any of them (``any``)."""
    out: dict[str, int] = {}
    hit = [False] * len(items)
    for name, column in LEAK_COLUMNS.items():
        if any(column in row for row in items):
            flags = [row.get(column) is not None and row[column] >= threshold for row in items]
            out[name] = sum(flags)
            hit = [a or b for a, b in zip(hit, flags)]
    out["any"] = sum(hit)
    return out
