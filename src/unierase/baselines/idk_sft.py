"""IdkSFT (TOFU's "idk" baseline, OpenUnlearning's IdkNLL): fine-tune the forget questions to
refusals, ``loss = gamma * NLL(refusal | forget question) + alpha * NLL(retain)``. Each question gets
its refusal from `unierase.token.refusals.pick_refusal`, the same phrases UniErase's token learns."""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.baselines._loop import require_retain, retain_term, run_unlearning
from unierase.config import BaselineConfig
from unierase.data.facts import Fact
from unierase.model.qa_loss import mean_token_nll
from unierase.token.refusals import pick_refusal


def idk_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    forget: list[Fact],
    retain: list[Fact],
    config: BaselineConfig,
    progress: bool = True,
) -> None:
    """Supervised fine-tuning to refusals on the forget questions; the model changes in place.

    Raises:
        ValueError: ``retain`` is empty while ``config.retain_weight`` is positive.
    """
    require_retain(retain, config, "IdkSFT")

    def loss(model, forget_batch, retain_batch, idx):
        value = config.forget_weight * mean_token_nll(model, forget_batch)
        return value + retain_term(model, retain_batch, config)

    refusals = [pick_refusal(f.question) for f in forget]
    run_unlearning(
        model, tokenizer, forget, retain, config, loss, forget_answers=refusals, name="IdkSFT", progress=progress
    )
