"""A fine-tuning baseline as an unlearning method: no preparation, one fine-tuning run per request."""

from __future__ import annotations

import time

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.baselines import BaselineFn
from unierase.config import Params
from unierase.data.facts import Fact
from unierase.methods.base import MethodReport, Supplies


class FineTuningBaseline:
    """Runs a baseline function (`unierase.baselines`) on each request with ``params.baselines``."""

    keys_at_subjects = False

    def __init__(self, fn: BaselineFn, params: Params, progress: bool = True) -> None:
        self.fn, self.params, self.progress = fn, params, progress
        self._report = MethodReport()

    def prepare(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, supplies: Supplies) -> None:
        """Nothing to prepare: a baseline needs neither a token nor statistics."""

    def apply(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, forget: list[Fact], retain: list[Fact]
    ) -> None:
        """Fine-tunes the model on this request."""
        started = time.perf_counter()
        self.fn(model, tokenizer, forget, retain, self.params.baselines, progress=self.progress)
        self._report.add_time("unlearn_s", time.perf_counter() - started)

    def report(self) -> MethodReport:
        """Seconds spent fine-tuning."""
        return self._report
