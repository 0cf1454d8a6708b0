"""The interface every unlearning method implements, UniErase and the baselines alike.

A method is built from the parameters, prepared once on the model it starts from (UniErase installs
its token and fixes its preserved-key statistics there), applied to each request in turn, and then
reports what it did. The erase stage drives it and owns every file: what a method needs from disk
or from a cache reaches it through `Supplies`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import Params
from unierase.data.facts import Fact
from unierase.edit.state import EditState
from unierase.token.vocabulary import UnlearningToken

# (preserved, heldout, info): per-layer second moments of the preserved keys and of held-out keys.
Statistics = tuple[dict[int, torch.Tensor], dict[int, torch.Tensor] | None, dict]


@dataclass
class Supplies:
    """What the erase stage hands a method, loaded or computed through its caches on demand.

    Attributes:
        token: Returns the learned unlearning token of the unedited model (cached per base model).
        statistics: Returns the preserved-key statistics of the unedited model (cached on disk).
        state: The edit state an earlier erasure left in the model directory, if any.
    """

    token: Callable[[PreTrainedModel, PreTrainedTokenizerBase], UnlearningToken]
    statistics: Callable[[PreTrainedModel, PreTrainedTokenizerBase], Statistics]
    state: EditState | None = None


@dataclass
class MethodReport:
    """What a method did, for the erase report.

    Attributes:
        timings: Seconds per phase (summed over requests).
        subjects: The subject each forget fact was keyed at (UniErase only).
        diagnostics: Method-specific figures (per-layer edit reports, value losses, ...).
        state: The edit state to save with the model (None for methods without one).
    """

    timings: dict[str, float] = field(default_factory=dict)
    subjects: list[str] = field(default_factory=list)
    diagnostics: dict = field(default_factory=dict)
    state: EditState | None = None

    def add_time(self, phase: str, seconds: float) -> None:
        """Adds ``seconds`` to a phase's total."""
        self.timings[phase] = self.timings.get(phase, 0.0) + seconds


class UnlearningMethod(Protocol):
    """An unlearning method: ``prepare`` once, ``apply`` per request, then ``report``.

    Attributes:
        keys_at_subjects: The method keys its edits at each question's subject; the erase stage then
            fills in every fact's subject before any expensive phase.
    """

    keys_at_subjects: bool

    def prepare(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, supplies: Supplies) -> None:
        """Readies the model (and keeps what every request needs), before the first request."""
        ...

    def apply(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, forget: list[Fact], retain: list[Fact]
    ) -> None:
        """Unlearns one request's ``forget`` facts in place, keeping ``retain`` where the method uses it."""
        ...

    def report(self) -> MethodReport:
        """What was done, after the last request."""
        ...


MethodFactory = Callable[[Params, bool], UnlearningMethod]
