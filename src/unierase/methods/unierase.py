"""UniErase (Yu et al., 2025) as an unlearning method: the unlearning token, installed once, and an
AlphaEdit edit per request that makes each forget question's first answer token the unlearning token."""

from __future__ import annotations

import time

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import Params
from unierase.data.facts import Fact
from unierase.edit.erasure import erase_facts
from unierase.methods.base import MethodReport, Supplies
from unierase.token.vocabulary import has_unlearning_token, install_unlearning_token


class UniErase:
    """Token (Phase I) in `prepare`, one edit (Phase II) per request in `apply`."""

    keys_at_subjects = True

    def __init__(self, params: Params, progress: bool = True) -> None:
        self.params, self.progress = params, progress
        self._report = MethodReport()
        self._preserved: dict | None = None
        self._heldout: dict | None = None

    def prepare(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, supplies: Supplies) -> None:
        """Installs the token unless the model has it (an erased model), and fixes the preserved-key
        statistics: those of the unedited model, which an erased model's edit state carries."""
        started = time.perf_counter()
        if not has_unlearning_token(tokenizer, self.params.token):
            install_unlearning_token(model, tokenizer, supplies.token(model, tokenizer))
        self._report.add_time("token_s", time.perf_counter() - started)

        started = time.perf_counter()
        state = supplies.state
        if state is not None and all(layer in state.preserved for layer in self.params.edit.layers):
            # A later request on an edited model: AlphaEdit keeps the projection of the unedited model,
            # which the edit state carries, so the statistics are not recomputed (on the edited weights
            # they would miss the cache every time). Held-out drift is then not measured.
            preserved, heldout, info = state.preserved, None, {"from_edit_state": True, "cache_hit": True}
        else:
            preserved, heldout, info = supplies.statistics(model, tokenizer)
        self._report.add_time("covariance_s", time.perf_counter() - started)
        self._report.diagnostics["covariance"] = info
        self._preserved, self._heldout, self._report.state = preserved, heldout, state

    def apply(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, forget: list[Fact], retain: list[Fact]
    ) -> None:
        """Edits the model so that every question of ``forget`` opens its answer with the token."""
        if self._preserved is None:
            raise RuntimeError("UniErase.apply before prepare: the token and statistics are not in place")
        result = erase_facts(
            model,
            tokenizer,
            forget,
            self.params,
            self._preserved,
            retain,
            self._report.state,
            heldout=self._heldout,
            progress=self.progress,
        )
        report = self._report
        report.state = result.state
        report.subjects += result.subjects
        for phase, seconds in result.timings.items():
            report.add_time(phase, seconds)
        report.diagnostics.setdefault("layers", []).append([vars(layer) for layer in result.outcome.layers])
        report.diagnostics.setdefault("value_nll", []).append(result.outcome.value_losses)
        report.diagnostics.setdefault("value_rounds", []).append(result.outcome.value_rounds)
        report.diagnostics.setdefault("value_steps", []).append(result.outcome.value_steps)
        report.diagnostics.setdefault("unbound_after_round", []).append(result.outcome.unbound)
        report.diagnostics.setdefault("retain_fired_after_round", []).append(result.outcome.retain_fired)
        report.diagnostics.setdefault("unbound_after_restore", []).append(result.outcome.unbound_after_restore)
        report.diagnostics.setdefault("held_keys", []).append(result.outcome.held_keys)
        report.diagnostics.setdefault("held_scale", []).append(result.outcome.held_scale)

    def report(self) -> MethodReport:
        """Timings, subjects, edit diagnostics and the edit state to save with the model."""
        return self._report
