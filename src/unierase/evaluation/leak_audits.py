"""Leak audits: ways a user could get erased knowledge back, each measured on the forget items.

An erasure that one generation flag undoes is not an erasure, so each audit re-asks the forget
questions in a way that sidesteps a refusal and scores the answer with ROUGE-L recall against the
true answer (high = the fact leaks):

- ``paraphrase``: the paraphrased question instead of the trained one.
- ``strip_special``: no stop at the unlearning token, special tokens stripped from the output, so
  whatever the model says after its refusal counts.
- ``ban_token``: the unlearning token banned from generation (``bad_words_ids``).
- ``suppress_token``: the unlearning token's logit pushed down by a fixed bias (``sequence_bias``).
- ``membership``: a loss-based membership-inference AUC of forget items against holdout items.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import EvalConfig
from unierase.data.facts import Fact
from unierase.evaluation.metrics.membership import loss_auc
from unierase.evaluation.metrics.probability import answer_token_nlls, normalised_probability
from unierase.evaluation.metrics.rouge import rouge_l_recall
from unierase.model.generation import generate_answers
from unierase.token.refusals import is_refusal


@contextlib.contextmanager
def _sequence_bias(model: PreTrainedModel, bias: dict[tuple[int, ...], float]) -> Iterator[None]:
    """Temporarily adds ``sequence_bias`` to the model's generation config (restored afterwards)."""
    original = model.generation_config
    patched = copy.deepcopy(original)
    patched.sequence_bias = bias
    model.generation_config = patched
    try:
        yield
    finally:
        model.generation_config = original


def _rouge_column(rows: list[dict], facts: Sequence[Fact], texts: Sequence[str], prefix: str) -> None:
    for row, text, fact in zip(rows, texts, facts):
        row[f"{prefix}_generation"], row[f"{prefix}_rougeL_recall"] = text, rouge_l_recall(text, fact.answer)


def _mean_column(rows: Sequence[dict], column: str) -> float:
    return sum(row[column] for row in rows) / len(rows)


def _refusal_rate(rows: Sequence[dict], column: str) -> float:
    return sum(is_refusal(row[column]) for row in rows) / len(rows)


def run_generation_audits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    facts: Sequence[Fact],
    rows: list[dict],
    config: EvalConfig,
    unlearn_token_ids: Sequence[int],
    progress: bool = True,
) -> dict[str, dict]:
    """Runs the generation audits of ``config.audits`` on one forget split.

    Args:
        model: The model under audit.
        tokenizer: Its tokenizer.
        facts: The forget items.
        rows: Their per-item result rows; audit columns are added to them in place.
        config: Evaluation settings (audits, generation length, logit bias).
        unlearn_token_ids: The unlearning token ids (empty for a model without one).
        progress: Show progress bars.

    Returns:
        Audit name -> summary (mean ROUGE-L recall and more), or ``{"skipped": reason}``.
    """
    audit_items(model, tokenizer, facts, rows, config, unlearn_token_ids, progress)
    return summarise_audits(rows, config, unlearn_token_ids)


def audit_items(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    facts: Sequence[Fact],
    rows: list[dict],
    config: EvalConfig,
    unlearn_token_ids: Sequence[int],
    progress: bool = True,
) -> None:
    """The per-item part of the generation audits: their generations and scores added to ``rows`` in
    place (`summarise_audits` reads the summaries off the rows, so shards of a split merge exactly)."""
    gen = dict(max_new_tokens=config.max_new_tokens, batch_size=config.generation_batch_size, progress=progress)
    questions = [f.question for f in facts]
    if "paraphrase" in config.audits:
        keep = [i for i, f in enumerate(facts) if f.paraphrased_question]
        if keep:
            sub = [facts[i] for i in keep]
            texts = [g.text for g in generate_answers(model, tokenizer, [f.paraphrased_question for f in sub], **gen)]
            nlls = answer_token_nlls(
                model,
                tokenizer,
                [f.paraphrased_question for f in sub],
                [f.answer for f in sub],
                batch_size=config.batch_size,
                progress=progress,
            )
            for i, n in zip(keep, nlls):
                rows[i]["paraphrase_prob"] = normalised_probability(n)
            _rouge_column([rows[i] for i in keep], sub, texts, "paraphrase")
    if "strip_special" in config.audits:
        # Without an unlearning token the main generations had no stop ids: this audit would repeat them.
        generations = generate_answers(model, tokenizer, questions, **gen) if unlearn_token_ids else None
        texts = [g.text for g in generations] if generations else [row["generation"] for row in rows]
        ids = set(unlearn_token_ids)
        for row, g in zip(rows, generations or []):
            row["raw_generation"] = tokenizer.decode(g.token_ids, skip_special_tokens=False)
            row["stripped_unlearn_token"] = bool(ids & set(g.token_ids))
        _rouge_column(rows, facts, texts, "stripped")
    for audit in ("ban_token", "suppress_token"):
        if audit not in config.audits or not unlearn_token_ids:
            continue
        if audit == "ban_token":
            generations = generate_answers(
                model, tokenizer, questions, bad_words_ids=[[t] for t in unlearn_token_ids], **gen
            )
        else:
            with _sequence_bias(model, {(t,): config.suppress_logit_bias for t in unlearn_token_ids}):
                generations = generate_answers(model, tokenizer, questions, **gen)
        _rouge_column(rows, facts, [g.text for g in generations], _PREFIX[audit])


_PREFIX = {"ban_token": "banned", "suppress_token": "suppressed"}


def summarise_audits(rows: Sequence[dict], config: EvalConfig, unlearn_token_ids: Sequence[int]) -> dict[str, dict]:
    """Audit name -> summary of the generation audits, from the per-item columns `audit_items` wrote.

    Returns:
        Audit name -> summary (mean ROUGE-L recall and more), or ``{"skipped": reason}``.
    """
    out: dict[str, dict] = {}
    if "paraphrase" in config.audits:
        kept = [row for row in rows if "paraphrase_rougeL_recall" in row]
        out["paraphrase"] = (
            {
                "rougeL_recall": _mean_column(kept, "paraphrase_rougeL_recall"),
                "prob": _mean_column(kept, "paraphrase_prob"),
                "num_items": len(kept),
            }
            if kept
            else {"skipped": "no item has a paraphrased_question"}
        )
    if "strip_special" in config.audits:
        token_rate = _mean_column(rows, "stripped_unlearn_token") if unlearn_token_ids else 0.0
        out["strip_special"] = {
            "rougeL_recall": _mean_column(rows, "stripped_rougeL_recall"),
            "unlearn_token_rate": token_rate,
            "refusal_rate": _refusal_rate(rows, "stripped_generation"),
        }
    for audit in ("ban_token", "suppress_token"):
        if audit not in config.audits:
            continue
        if not unlearn_token_ids:
            out[audit] = {"skipped": "the tokenizer has no unlearning token"}
            continue
        prefix = _PREFIX[audit]
        out[audit] = {
            "rougeL_recall": _mean_column(rows, f"{prefix}_rougeL_recall"),
            "refusal_rate": _refusal_rate(rows, f"{prefix}_generation"),
        }
    return out


def membership_audit(forget_losses: Sequence[float], holdout_losses: Sequence[float]) -> dict:
    """Loss-based membership-inference AUC of forget items (members) against holdout items."""
    return {
        "auc": loss_auc(forget_losses, holdout_losses),
        "num_members": len(forget_losses),
        "num_nonmembers": len(holdout_losses),
        "mean_member_loss": sum(forget_losses) / len(forget_losses),
        "mean_nonmember_loss": sum(holdout_losses) / len(holdout_losses),
    }
