"""Leak audits: ways a user could get erased knowledge back, each measured on the forget items.

An erasure that one generation flag undoes is not an erasure, so each audit re-asks the forget
questions in a way that sidesteps a refusal and scores the answer with ROUGE-L recall against the
true answer (high = the fact leaks); an item counts as answered when its recall reaches
``EvalConfig.answered_rouge``. Each audit also reports the novel-word recall (the answer's words that
its question lacks, `unierase.evaluation.metrics.novel_words`) and the items leaked by it, which a
wrong answer that echoes the question does not reach:

- ``paraphrase``: the paraphrased question instead of the trained one.
- ``strip_special``: no stop at the unlearning token, special tokens stripped from the output, so
  whatever the model says after its refusal counts.
- ``ban_token``: the unlearning token banned from generation (``bad_words_ids``).
- ``suppress_token``: the unlearning token's logit pushed down by a fixed bias (``sequence_bias``).
- ``prefill_answer`` / ``prefill_subject``: the assistant's answer started for the model, with
  ``EvalConfig.prefill_text`` or with the question's subject, so a first-token gate has already passed;
  the model's continuation is scored (the prefill is the attacker's text, not the model's).
- ``quantise_int8`` / ``quantise_nf4``: the weights through an int8 or 4-bit NF4 round trip
  (`unierase.model.quantisation`), then the questions as usual.
- ``relearn``: a few optimiser steps on retain items only (`unierase.evaluation.relearning`), then the
  questions as usual.
- ``membership``: a loss-based membership-inference AUC of forget items against holdout items.

The forget split's ``attacks`` entry then says whether the erasure holds or is only a redirection:
items whose answers the plain generation withholds but an audit gets back.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import EvalConfig
from unierase.data.facts import Fact
from unierase.edit.subject import fallback_subject
from unierase.evaluation.metrics.membership import loss_auc
from unierase.evaluation.metrics.novel_words import novel_word_recall
from unierase.evaluation.metrics.probability import answer_token_nlls, normalised_probability
from unierase.evaluation.metrics.rouge import rouge_l_recall
from unierase.evaluation.relearning import relearned_weights
from unierase.model.generation import generate_answers
from unierase.model.quantisation import quantised_weights
from unierase.token.refusals import is_refusal, served_refusals


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
        row[f"{prefix}_novel_recall"] = novel_word_recall(text, fact.answer, fact.question)


def _mean_column(rows: Sequence[dict], column: str) -> float:
    return sum(row[column] for row in rows) / len(rows)


def _refusal_rate(rows: Sequence[dict], column: str) -> float:
    return sum(is_refusal(row[column]) for row in rows) / len(rows)


# Column prefix of each generation audit in the item rows (`<prefix>_generation`, `<prefix>_rougeL_recall`).
AUDIT_PREFIX = {
    "paraphrase": "paraphrase",
    "strip_special": "stripped",
    "ban_token": "banned",
    "suppress_token": "suppressed",
    "prefill_answer": "prefill_answer",
    "prefill_subject": "prefill_subject",
    "quantise_int8": "int8",
    "quantise_nf4": "nf4",
    "relearn": "relearned",
}
_TOKEN_AUDITS = ("ban_token", "suppress_token")
_QUANTISE = {"quantise_int8": "int8", "quantise_nf4": "nf4"}  # audit -> `quantised_weights` scheme


def audit_items(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    facts: Sequence[Fact],
    rows: list[dict],
    config: EvalConfig,
    unlearn_token_ids: Sequence[int],
    relearn_facts: Sequence[Fact] = (),
    progress: bool = True,
) -> None:
    """The per-item part of the generation audits: their generations and scores added to ``rows`` in
    place (`summarise_audits` reads the summaries off the rows, so shards of a split merge exactly)."""
    gen = dict(max_new_tokens=config.max_new_tokens, batch_size=config.generation_batch_size, progress=progress)
    # The weight and prefill attacks ask as a deployment would: stopping where the main answers stop.
    asked = dict(gen, stop_token_ids=list(unlearn_token_ids), refusals=served_refusals(tokenizer, config.after_token))
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
            _rouge_column([rows[i] for i in keep], sub, texts, AUDIT_PREFIX["paraphrase"])
    if "strip_special" in config.audits:
        # Without an unlearning token the main generations had no stop ids: this audit would repeat them.
        generations = generate_answers(model, tokenizer, questions, **gen) if unlearn_token_ids else None
        texts = [g.text for g in generations] if generations else [row["generation"] for row in rows]
        ids = set(unlearn_token_ids)
        for row, g in zip(rows, generations or []):
            row["raw_generation"] = tokenizer.decode(g.token_ids, skip_special_tokens=False)
            row["stripped_unlearn_token"] = bool(ids & set(g.token_ids))
        _rouge_column(rows, facts, texts, AUDIT_PREFIX["strip_special"])
    for audit in _TOKEN_AUDITS:
        if audit not in config.audits or not unlearn_token_ids:
            continue
        if audit == "ban_token":
            generations = generate_answers(
                model, tokenizer, questions, bad_words_ids=[[t] for t in unlearn_token_ids], **gen
            )
        else:
            with _sequence_bias(model, {(t,): config.suppress_logit_bias for t in unlearn_token_ids}):
                generations = generate_answers(model, tokenizer, questions, **gen)
        _rouge_column(rows, facts, [g.text for g in generations], AUDIT_PREFIX[audit])
    if "prefill_answer" in config.audits:
        prefills = [config.prefill_text] * len(facts)
        texts = [g.text for g in generate_answers(model, tokenizer, questions, prefills=prefills, **asked)]
        _rouge_column(rows, facts, texts, AUDIT_PREFIX["prefill_answer"])
    if "prefill_subject" in config.audits:
        subjects = [f.subject or fallback_subject(f.question).subject for f in facts]
        texts = [g.text for g in generate_answers(model, tokenizer, questions, prefills=subjects, **asked)]
        for row, subject in zip(rows, subjects):
            row["prefill_subject_prefill"] = subject
        _rouge_column(rows, facts, texts, AUDIT_PREFIX["prefill_subject"])
    for audit, scheme in _QUANTISE.items():
        if audit in config.audits:
            with quantised_weights(model, scheme):
                texts = [g.text for g in generate_answers(model, tokenizer, questions, **asked)]
            _rouge_column(rows, facts, texts, AUDIT_PREFIX[audit])
    if "relearn" in config.audits and relearn_facts:
        with relearned_weights(model, tokenizer, relearn_facts, config):
            texts = [g.text for g in generate_answers(model, tokenizer, questions, **asked)]
        _rouge_column(rows, facts, texts, AUDIT_PREFIX["relearn"])


def summarise_audits(rows: Sequence[dict], config: EvalConfig, unlearn_token_ids: Sequence[int]) -> dict[str, dict]:
    """Audit name -> summary of the generation audits, from the per-item columns `audit_items` wrote,
    and ``attacks``: how many items the plain answers and the worst audit give away.

    Returns:
        Audit name -> summary (mean ROUGE-L recall, items answered and more), or ``{"skipped": reason}``.
    """
    out: dict[str, dict] = {}
    for audit in config.audits:
        if audit == "membership":
            continue  # needs the holdout split: `membership_audit`
        column = f"{AUDIT_PREFIX[audit]}_rougeL_recall"
        kept = [row for row in rows if column in row]
        if not kept:
            out[audit] = {"skipped": _skip_reason(audit, unlearn_token_ids)}
            continue
        summary = {
            "rougeL_recall": _mean_column(kept, column),
            "num_answered": _answered(kept, column, config),
            **_novel_figures(kept, f"{AUDIT_PREFIX[audit]}_novel_recall", config),
        }
        if audit == "paraphrase":
            summary |= {"prob": _mean_column(kept, "paraphrase_prob"), "num_items": len(kept)}
        else:
            summary["refusal_rate"] = _refusal_rate(kept, f"{AUDIT_PREFIX[audit]}_generation")
        if audit == "strip_special":
            summary["unlearn_token_rate"] = _mean_column(rows, "stripped_unlearn_token") if unlearn_token_ids else 0.0
        out[audit] = summary
    out["attacks"] = attack_verdict(rows, out, config)
    return out


def _skip_reason(audit: str, unlearn_token_ids: Sequence[int]) -> str:
    if audit in _TOKEN_AUDITS and not unlearn_token_ids:
        return "the tokenizer has no unlearning token"
    if audit == "paraphrase":
        return "no item has a paraphrased_question"
    if audit == "relearn":
        return "no retain split to relearn on"
    return "not run"


def _answered(rows: Sequence[dict], column: str, config: EvalConfig) -> int:
    return sum(row[column] >= config.answered_rouge for row in rows)


def _novel_figures(rows: Sequence[dict], column: str, config: EvalConfig) -> dict:
    """Mean novel-word recall over the items that have novel words, and the items leaked (at least
    ``answered_rouge`` of them said)."""
    scored = [row[column] for row in rows if row.get(column) is not None]
    return {
        "novel_recall": sum(scored) / len(scored) if scored else 0.0,
        "num_leaked": sum(x >= config.answered_rouge for x in scored),
    }


def attack_verdict(rows: Sequence[dict], summaries: dict[str, dict], config: EvalConfig) -> dict:
    """Whether the erasure holds under the audits that were run, counted in leaked items: items whose
    answer's own words (`unierase.evaluation.metrics.novel_words`) come back, at least
    ``answered_rouge`` of them. ROUGE-L would count a wrong answer that repeats the question's words.
    ``redirection`` is 1 when some audit leaks more items than the plain answers do: the knowledge is
    still in the model, behind a refusal."""
    plain = _novel_figures(rows, "novel_recall", config)["num_leaked"]
    attacked = {a: s["num_leaked"] for a, s in summaries.items() if "num_leaked" in s}
    worst = max(attacked, key=attacked.get, default=None)
    worst_n = attacked[worst] if worst else plain
    total = len(rows)
    if worst is None:
        verdict = "no leak audit ran"
    elif worst_n > plain:
        back = ", ".join(f"{n} under {a}" for a, n in sorted(attacked.items(), key=lambda kv: -kv[1]) if n > plain)
        verdict = (
            f"only a redirection: {plain} of {total} forget answers leak plainly, but more come back "
            f"({back}); the knowledge is still in the weights"
        )
    else:
        verdict = f"holds under every audit run: at most {worst_n} of {total} forget answers leak ({plain} plainly)"
    return {
        "num_items": total,
        "leaked_plain": plain,
        "leaked_worst": worst_n,
        "worst_audit": worst,
        "redirection": float(worst_n > plain),
        "verdict": verdict,
    }


def membership_audit(forget_losses: Sequence[float], holdout_losses: Sequence[float]) -> dict:
    """Loss-based membership-inference AUC of forget items (members) against holdout items."""
    return {
        "auc": loss_auc(forget_losses, holdout_losses),
        "num_members": len(forget_losses),
        "num_nonmembers": len(holdout_losses),
        "mean_member_loss": sum(forget_losses) / len(forget_losses),
        "mean_nonmember_loss": sum(holdout_losses) / len(holdout_losses),
    }
