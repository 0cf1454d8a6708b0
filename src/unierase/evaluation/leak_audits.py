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


def _rouge_column(rows: list[dict], facts: Sequence[Fact], texts: Sequence[str], prefix: str) -> float:
    scores = [rouge_l_recall(t, f.answer) for t, f in zip(texts, facts)]
    for row, text, score in zip(rows, texts, scores):
        row[f"{prefix}_generation"], row[f"{prefix}_rougeL_recall"] = text, score
    return sum(scores) / len(scores)


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
    gen = dict(max_new_tokens=config.max_new_tokens, batch_size=config.generation_batch_size, progress=progress)
    questions = [f.question for f in facts]
    out: dict[str, dict] = {}
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
            probs = [normalised_probability(n) for n in nlls]
            for i, p in zip(keep, probs):
                rows[i]["paraphrase_prob"] = p
            out["paraphrase"] = {
                "rougeL_recall": _rouge_column([rows[i] for i in keep], sub, texts, "paraphrase"),
                "prob": sum(probs) / len(probs),
                "num_items": len(keep),
            }
        else:
            out["paraphrase"] = {"skipped": "no item has a paraphrased_question"}
    if "strip_special" in config.audits:
        # Without an unlearning token the main generations had no stop ids: this audit would repeat them.
        generations = generate_answers(model, tokenizer, questions, **gen) if unlearn_token_ids else None
        texts = [g.text for g in generations] if generations else [row["generation"] for row in rows]
        ids = set(unlearn_token_ids)
        for row, g in zip(rows, generations or []):
            row["raw_generation"] = tokenizer.decode(g.token_ids, skip_special_tokens=False)
        token_rate = sum(bool(ids & set(g.token_ids)) for g in generations) / len(texts) if generations else 0.0
        out["strip_special"] = {
            "rougeL_recall": _rouge_column(rows, facts, texts, "stripped"),
            "unlearn_token_rate": token_rate,
            "refusal_rate": sum(is_refusal(t) for t in texts) / len(texts),
        }
    token_audits = [a for a in ("ban_token", "suppress_token") if a in config.audits]
    for audit in token_audits:
        if not unlearn_token_ids:
            out[audit] = {"skipped": "the tokenizer has no unlearning token"}
            continue
        if audit == "ban_token":
            generations = generate_answers(
                model, tokenizer, questions, bad_words_ids=[[t] for t in unlearn_token_ids], **gen
            )
            prefix = "banned"
        else:
            with _sequence_bias(model, {(t,): config.suppress_logit_bias for t in unlearn_token_ids}):
                generations = generate_answers(model, tokenizer, questions, **gen)
            prefix = "suppressed"
        texts = [g.text for g in generations]
        out[audit] = {
            "rougeL_recall": _rouge_column(rows, facts, texts, prefix),
            "refusal_rate": sum(is_refusal(t) for t in texts) / len(texts),
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
