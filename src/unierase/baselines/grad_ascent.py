"""GradAscent (Jang et al., 2023; OpenUnlearning ``GradAscent``): maximise the NLL of the forget answers."""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.baselines._loop import run_unlearning
from unierase.config import BaselineConfig
from unierase.data.facts import Fact
from unierase.model.qa_loss import mean_token_nll


def grad_ascent(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    forget: list[Fact],
    retain: list[Fact],
    config: BaselineConfig,
    progress: bool = True,
) -> None:
    """Gradient ascent on the forget set (the retain set is not used); the model changes in place."""

    def loss(model, forget_batch, retain_batch, idx):
        return -config.forget_weight * mean_token_nll(model, forget_batch)

    run_unlearning(model, tokenizer, forget, [], config, loss, name="GradAscent", progress=progress)
