"""Evaluation under one protocol: TOFU metrics, UniErase's aggregates and the leak audits.

The protocol follows OpenUnlearning so that numbers compare across tools: the prompt is the model's
chat template on the question alone (`unierase.model.prompts`), answer probabilities score the answer ids
tokenised on their own after the prompt ids (`unierase.evaluation.metrics.probability`), and generations are
greedy with at most ``EvalConfig.max_new_tokens`` (200, as OpenUnlearning and the TOFU code) new tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import EvalConfig
from unierase.data.facts import Fact
from unierase.data.splits import split_kind
from unierase.evaluation.leak_audits import audit_items, membership_audit, summarise_audits
from unierase.evaluation.metrics.aggregates import forget_efficacy, model_ability, model_utility
from unierase.evaluation.metrics.fluency import ngram_entropy
from unierase.evaluation.metrics.forget_quality import forget_quality
from unierase.evaluation.metrics.novel_words import novel_word_recall
from unierase.evaluation.metrics.probability import (
    answer_token_nlls,
    normalised_probability,
    option_normalised_probability,
)
from unierase.evaluation.metrics.rouge import rouge_l_recall
from unierase.evaluation.metrics.similarity import cosine_similarities
from unierase.evaluation.metrics.truth_ratio import truth_ratio, truth_ratio_closer_to_1, truth_ratio_true_better
from unierase.model.generation import generate_answers
from unierase.token.refusals import is_refusal, served_refusals

logger = logging.getLogger(__name__)

# UniErase's forget efficacy averages, and its model ability takes the harmonic mean of, these
# per-split metrics; the truth ratio enters as max(0, 1 - R), which is high while the model still
# prefers the true answer (its forget-set form min(R, 1/R) is high after forgetting, the wrong way round).
FORGET_EFFICACY_METRICS = ("prob", "rougeL_recall", "truth_ratio_true_better", "cosine_similarity")
MODEL_ABILITY_METRICS = ("prob", "rougeL_recall", "truth_ratio_true_better", "cosine_similarity")


@dataclass(frozen=True)
class EvalReport:
    """The result of one evaluation.

    Attributes:
        splits: Split name -> its kind, item count and mean metrics.
        aggregates: forget_quality, model_utility, forget_efficacy, model_ability and, for each, the
            ``split/metric`` names that went into it.
        audits: Split name -> audit name -> summary (forget splits only).
        items: Split name -> one row per item.
    """

    splits: dict[str, dict[str, Any]]
    aggregates: dict[str, Any]
    audits: dict[str, dict[str, Any]] = field(default_factory=dict)
    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Everything but the per-item rows: the content of ``report.json``."""
        return {"splits": self.splits, "aggregates": self.aggregates, "audits": self.audits}


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _score_probabilities(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    facts: Sequence[Fact],
    config: EvalConfig,
    progress: bool,
) -> list[dict[str, Any]]:
    """Answer loss, probability and truth ratio of each item (one batched NLL pass over every answer)."""
    questions, answers, owner = [], [], []
    for i, f in enumerate(facts):
        for role, text in [("answer", f.answer), ("para", f.paraphrased_answer)] + [
            ("pert", p) for p in (f.perturbed_answer or [])
        ]:
            if text is not None:
                questions.append(f.question)
                answers.append(text)
                owner.append((i, role))
    nlls = answer_token_nlls(model, tokenizer, questions, answers, batch_size=config.batch_size, progress=progress)
    probs: list[dict[str, Any]] = [{"pert": []} for _ in facts]
    for (i, role), token_nlls in zip(owner, nlls):
        p = normalised_probability(token_nlls)
        if role == "pert":
            probs[i]["pert"].append(p)
        else:
            probs[i][role] = p
            if role == "answer":
                probs[i]["loss"] = sum(token_nlls) / len(token_nlls)
    rows = []
    for f, p in zip(facts, probs):
        has_para = "para" in p
        # TOFU: option-normalised probability where wrong options exist and no paraphrase (real
        # authors, world facts); the plain length-normalised one elsewhere.
        prob = option_normalised_probability(p["answer"], p["pert"]) if p["pert"] and not has_para else p["answer"]
        ratio = truth_ratio(p["pert"], p["para"] if has_para else p["answer"]) if p["pert"] else None
        rows.append(
            {"question": f.question, "answer": f.answer, "prob": prob, "truth_ratio": ratio, "answer_loss": p["loss"]}
        )
    return rows


def evaluate_items(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    name: str,
    facts: Sequence[Fact],
    config: EvalConfig,
    embedder: Any = None,
    stop_token_ids: Sequence[int] = (),
    relearn_facts: Sequence[Fact] = (),
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One row per item of split ``name`` (any run of its items: a whole split or one shard of it):
    probabilities, the greedy generation and its scores, and on a forget split the audits' columns.

    Every summary is computed from these rows (`report_from_items`), so the rows of a split's shards,
    concatenated in item order, give the report of the whole split.

    Args:
        model: The model (in eval mode; its device is used).
        tokenizer: Its tokenizer (with a pad token).
        name: The split's name (its kind follows from it: forget splits get the audits' columns).
        facts: The items.
        config: Evaluation settings.
        embedder: A sentence-transformers model for cosine similarity; None leaves it out.
        stop_token_ids: The unlearning token ids: generations stop at them, the token audits ban them.
        relearn_facts: The items the relearning audit trains on (`relearn_items`); none skips it.
        progress: Show progress bars.
    """
    rows = _score_probabilities(model, tokenizer, facts, config, progress)
    generations = generate_answers(
        model,
        tokenizer,
        [f.question for f in facts],
        max_new_tokens=config.max_new_tokens,
        batch_size=config.generation_batch_size,
        stop_token_ids=list(stop_token_ids),
        refusals=served_refusals(tokenizer, config.after_token),
        progress=progress,
    )
    sims = cosine_similarities(embedder, [g.text for g in generations], [f.answer for f in facts]) if embedder else None
    for i, (row, g, f) in enumerate(zip(rows, generations, facts)):
        row["generation"] = g.text
        # What a reader of the served answer sees: whether it opened with the unlearning token (the
        # gate fired) and whether the text after it, the token stripped, reads as a refusal.
        row["token_fired"] = g.opens_with(stop_token_ids)
        row["refusal_text"] = is_refusal(g.text)
        row["empty"] = not g.text.strip()
        row["rougeL_recall"] = rouge_l_recall(g.text, f.answer)
        row["novel_recall"] = novel_word_recall(g.text, f.answer, f.question)
        row["cosine_similarity"] = sims[i] if sims is not None else None
        row["fluency"] = ngram_entropy(g.text)
    if split_kind(name) == "forget":
        audit_items(model, tokenizer, facts, rows, config, stop_token_ids, relearn_facts, progress)
    return rows


def relearn_items(items: Mapping[str, Sequence[Fact]]) -> list[Fact]:
    """What the relearning audit may train on: every evaluated item of the retain splits, never a forget,
    holdout or other split's item."""
    return [f for name, facts in items.items() if split_kind(name) == "retain" for f in facts]


def summarise_split(name: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The split summary of its item rows: kind, num_items, prob, rougeL_recall, truth_ratio in the TOFU
    aggregation of its kind, both truth-ratio aggregations, cosine_similarity, fluency, answer_loss."""
    kind = split_kind(name)
    ratios = [r["truth_ratio"] for r in rows if r["truth_ratio"] is not None]
    closer = truth_ratio_closer_to_1(ratios) if ratios else None
    better = truth_ratio_true_better(ratios) if ratios else None
    return {
        "kind": kind,
        "num_items": len(rows),
        "prob": _mean([r["prob"] for r in rows]),
        "rougeL_recall": _mean([r["rougeL_recall"] for r in rows]),
        # TOFU reports min(R, 1/R) on forget sets and max(0, 1 - R) elsewhere.
        "truth_ratio": closer if kind == "forget" else better,
        "truth_ratio_closer_to_1": closer,
        "truth_ratio_true_better": better,
        "cosine_similarity": _mean([r["cosine_similarity"] for r in rows]),
        "fluency": _mean([r["fluency"] for r in rows]),
        "answer_loss": _mean([r["answer_loss"] for r in rows]),
        # Rows written before these columns existed have none of them: their rates are None.
        "token_trigger_rate": _mean([r.get("token_fired") for r in rows]),
        "refusal_text_rate": _mean([r.get("refusal_text") for r in rows]),
        "empty_rate": _mean([r.get("empty") for r in rows]),
    }


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    splits: Mapping[str, Sequence[Fact]],
    config: EvalConfig,
    retain_truth_ratios: Mapping[str, Sequence[float]] | None = None,
    unlearn_token_ids: Sequence[int] | None = None,
    embedder: Any = None,
    progress: bool = True,
) -> EvalReport:
    """Evaluates a model on every split, with aggregates and leak audits.

    Args:
        model: The model (in eval mode; its device is used).
        tokenizer: Its tokenizer (with a pad token).
        splits: Split name -> items; the kind of a split follows from its name (`unierase.data.splits.split_kind`).
        config: Evaluation settings.
        retain_truth_ratios: Forget split name -> a retain model's per-item truth ratios on it; forget
            quality is computed where given (the KS test on all forget splits' ratios pooled).
        unlearn_token_ids: Ids of the unlearning token(s): main generations stop at its second
            appearance (the end of a refusal), and the token audits ban or suppress it.
        embedder: A sentence-transformers model for cosine similarity; None leaves it out.
        progress: Show progress bars.

    Raises:
        ValueError: No splits, or an empty split.
    """
    token_ids = list(unlearn_token_ids or [])
    evaluated = evaluated_items(splits, config)
    relearn = relearn_items(evaluated)
    items = {}
    for name, facts in tqdm(list(evaluated.items()), desc="evaluate splits", disable=not progress):
        items[name] = evaluate_items(
            model,
            tokenizer,
            name,
            facts,
            config,
            embedder=embedder,
            stop_token_ids=token_ids,
            relearn_facts=relearn,
            progress=progress,
        )
    return report_from_items(items, config, retain_truth_ratios, token_ids)


def evaluated_items(splits: Mapping[str, Sequence[Fact]], config: EvalConfig) -> dict[str, list[Fact]]:
    """The items evaluated of each split (the first ``max_items_per_split``), in split order.

    Raises:
        ValueError: No splits, or an empty split.
    """
    if not splits:
        raise ValueError("nothing to evaluate: no splits")
    out = {name: list(facts)[: config.max_items_per_split] for name, facts in splits.items()}
    if empty := [name for name, facts in out.items() if not facts]:
        raise ValueError(f"split {empty[0]!r} is empty")
    return out


def report_from_items(
    items: Mapping[str, list[dict[str, Any]]],
    config: EvalConfig,
    retain_truth_ratios: Mapping[str, Sequence[float]] | None = None,
    unlearn_token_ids: Sequence[int] | None = None,
) -> EvalReport:
    """The report of an evaluation from its per-item rows (split name -> rows in item order): split
    summaries, generation audits and the membership audit of the forget splits, and the aggregates."""
    token_ids = list(unlearn_token_ids or [])
    kinds = {name: split_kind(name) for name in items}
    summaries, audits = {}, {}
    for name, rows in items.items():
        summaries[name] = summarise_split(name, rows)
        if kinds[name] == "forget":
            audits[name] = summarise_audits(rows, config, token_ids)
        logger.info("%s: prob %.3f rougeL %.3f", name, summaries[name]["prob"], summaries[name]["rougeL_recall"])
    forget_splits = [n for n in items if kinds[n] == "forget"]
    if "membership" in config.audits:
        holdout = [r["answer_loss"] for n in items if kinds[n] == "holdout" for r in items[n]]
        for name in forget_splits:
            audits[name]["membership"] = (
                membership_audit([r["answer_loss"] for r in items[name]], holdout)
                if holdout
                else {"skipped": "no holdout split (holdout*.jsonl) to serve as non-members"}
            )
    return EvalReport(
        splits=summaries,
        aggregates=_aggregates(summaries, dict(items), kinds, forget_splits, retain_truth_ratios),
        audits=audits,
        items=dict(items),
    )


def _aggregates(
    summaries: dict[str, dict[str, Any]],
    items: dict[str, list[dict[str, Any]]],
    kinds: dict[str, str],
    forget_splits: list[str],
    retain_truth_ratios: Mapping[str, Sequence[float]] | None,
) -> dict[str, Any]:
    fe, fe_used = forget_efficacy(summaries, kinds, FORGET_EFFICACY_METRICS)
    ma, ma_used = model_ability(summaries, kinds, MODEL_ABILITY_METRICS)
    mu, mu_used = model_utility(summaries, kinds)
    out: dict[str, Any] = {
        "forget_efficacy": fe,
        "forget_efficacy_metrics": fe_used,
        "model_ability": ma,
        "model_ability_metrics": ma_used,
        "model_utility": mu,
        "model_utility_metrics": mu_used,
        "forget_quality": None,
        "forget_quality_splits": [],
    }
    retain = retain_truth_ratios or {}
    used = [n for n in forget_splits if retain.get(n)]
    ours = [r["truth_ratio"] for n in used for r in items[n] if r["truth_ratio"] is not None]
    theirs = [float(r) for n in used for r in retain[n]]
    if ours and theirs:
        out["forget_quality"] = forget_quality(ours, theirs)
        out["forget_quality_splits"] = used
    else:
        out["forget_quality_note"] = "no retain-model truth ratios for a forget split with perturbed answers"
    return out


def forget_truth_ratios(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    splits: Mapping[str, Sequence[Fact]],
    config: EvalConfig,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Per-item truth ratios on the forget splits only (no generation): what forget quality needs
    from a retain model."""
    out = {}
    for name, facts in splits.items():
        if split_kind(name) == "forget":
            rows = _score_probabilities(model, tokenizer, list(facts)[: config.max_items_per_split], config, progress)
            out[name] = [r["truth_ratio"] for r in rows if r["truth_ratio"] is not None]
    return out
