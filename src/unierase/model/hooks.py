"""Reaching into a model by module path: finding a module, reading its weight as a matrix, and
capturing module inputs on a forward pass that stops as soon as they are recorded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted path, with an error naming the path when it is absent."""
    try:
        return model.get_submodule(path)
    except AttributeError as err:
        raise KeyError(
            f"the model has no module {path!r}; set model.mlp_out_template / layer_template for this architecture"
        ) from err


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The projection's weight as (out_features, in_features): GPT-2's Conv1D stores it transposed."""
    return module.weight.T if isinstance(module, Conv1D) else module.weight


class _StopForward(Exception):
    """Raised by a capture hook once every wanted input is recorded: the layers above them, and the
    LM head over the whole vocabulary, are never computed (on SmolLM2 that is most of the cost)."""


@contextmanager
def capture_inputs(
    modules: dict[str, nn.Module], outputs: dict[str, nn.Module] | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Records the input of each module of ``modules`` (and the output of each of ``outputs``, under its
    own name) on a forward pass run through `run_until_captured`, which stops once all are recorded."""
    seen: dict[str, torch.Tensor] = {}
    wanted = len(modules) + len(outputs or {})

    def record(name: str, value: torch.Tensor | tuple) -> None:
        seen[name] = (value[0] if isinstance(value, tuple) else value).detach()
        if len(seen) == wanted:
            raise _StopForward

    handles = [m.register_forward_pre_hook(lambda m_, a, name=name: record(name, a)) for name, m in modules.items()]
    handles += [
        m.register_forward_hook(lambda m_, a, out, name=name: record(name, out)) for name, m in (outputs or {}).items()
    ]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def run_until_captured(model: PreTrainedModel, seen: dict, **inputs: torch.Tensor) -> None:
    """Runs the model's body (no LM head) until the capture hooks have what they need."""
    seen.clear()
    try:
        model.base_model(**inputs)
    except _StopForward:
        pass
