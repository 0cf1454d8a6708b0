"""Fine-tuning unlearning baselines behind one registry, run on the same data, prompts and evaluation
as UniErase. Each is ``fn(model, tokenizer, forget, retain, config: BaselineConfig, progress=True) -> None``
and changes the model in place; ``unierase erase --method NAME`` looks ``NAME`` up here."""

from __future__ import annotations

from typing import Protocol

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.baselines.grad_ascent import grad_ascent
from unierase.baselines.grad_diff import grad_diff
from unierase.baselines.idk_sft import idk_sft
from unierase.baselines.npo import npo
from unierase.config import BaselineConfig
from unierase.data.facts import Fact


class BaselineFn(Protocol):
    """A baseline: unlearns ``forget`` (keeping ``retain`` where it uses one) in place; ``progress`` shows a bar."""

    def __call__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        forget: list[Fact],
        retain: list[Fact],
        config: BaselineConfig,
        progress: bool = True,
    ) -> None: ...


BASELINES: dict[str, BaselineFn] = {
    "grad_ascent": grad_ascent,
    "grad_diff": grad_diff,
    "npo": npo,
    "idk_sft": idk_sft,
}

__all__ = ["BASELINES", "BaselineFn", "grad_ascent", "grad_diff", "idk_sft", "npo"]
