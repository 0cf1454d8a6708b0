"""GradDiff (Liu et al., 2022; OpenUnlearning ``GradDiff``): ascend on forget, descend on retain,
``loss = -gamma * NLL(forget) + alpha * NLL(retain)``."""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.baselines._loop import require_retain, retain_term, run_unlearning
from unierase.config import BaselineConfig
from unierase.data.facts import Fact
from unierase.model.qa_loss import mean_token_nll


def grad_diff(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    forget: list[Fact],
    retain: list[Fact],
    config: BaselineConfig,
    progress: bool = True,
) -> None:
    """Gradient difference; the model changes in place.

    Raises:
        ValueError: ``retain`` is empty while ``config.retain_weight`` is positive.
    """
    require_retain(retain, config, "GradDiff")

    def loss(model, forget_batch, retain_batch, idx):
        value = -config.forget_weight * mean_token_nll(model, forget_batch)
        return value + retain_term(model, retain_batch, config)

    run_unlearning(model, tokenizer, forget, retain, config, loss, name="GradDiff", progress=progress)
