"""Fine-tuning unlearning baselines, run on the same data, prompts and evaluation as UniErase. Each is
``fn(model, tokenizer, forget, retain, config: BaselineConfig, progress=True) -> None`` and changes the
model in place; `unierase.methods` registers each under its name for ``unierase erase --method NAME``."""

from __future__ import annotations

from typing import Protocol

from transformers import PreTrainedModel, PreTrainedTokenizerBase

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
