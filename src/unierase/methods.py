"""Unlearning methods by name, for ``unierase erase --method``: UniErase (the default) and the
fine-tuning baselines, all behind one signature ``fn(model, tokenizer, forget, retain, params)``.

UniErase itself is run by `unierase.stages.erase.erase_stage`, which adds the token and the
preserved-key statistics around `unierase.edit.erasure.erase_facts`; its entry here marks the name valid.
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from unierase.config import Params
from unierase.data.facts import Fact

Method = Callable[[PreTrainedModel, PreTrainedTokenizerBase, list[Fact], list[Fact], Params], None]


def _unierase(*_args, **_kwargs) -> None:
    raise RuntimeError("UniErase runs through unierase.stages.erase.erase_stage or unierase.edit.erasure.erase_facts")


def _baseline_methods() -> dict[str, Method]:
    from unierase.baselines import BASELINES

    return {
        name: (lambda model, tok, forget, retain, params, fn=fn: fn(model, tok, forget, retain, params.baselines))
        for name, fn in BASELINES.items()
    }


METHODS: dict[str, Method] = {"unierase": _unierase, **_baseline_methods()}
