"""Running a decoder-only model from its residual stream after a given layer.

The value optimisation (`unierase.edit.alphaedit`) changes the residual stream only at the last edited
layer, so every step recomputes layers that cannot change. Feeding the stream after that layer back in
as ``inputs_embeds`` to a model whose layer list holds only the layers above it runs the rest alone
(on SmolLM2 with layers 4-8 edited: 21 of 30 layers).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from transformers import PreTrainedModel

from unierase.model.hooks import get_module


@contextmanager
def only_layers_above(model: PreTrainedModel, layer_template: str, layer: int) -> Iterator[None]:
    """Temporarily leaves only the layers after ``layer`` in the model's layer list.

    Args:
        model: A model whose layers sit in one ``nn.ModuleList`` (``layer_template`` without its last
            part, e.g. ``model.layers``).
        layer_template: Path of one layer, e.g. ``model.layers.{}``.
        layer: The last layer that is *not* run.
    """
    list_path = layer_template.rsplit(".", 1)[0]
    owner_path, _, name = list_path.rpartition(".")
    owner = get_module(model, owner_path) if owner_path else model
    layers = getattr(owner, name)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{list_path!r} is not a list of layers; check model.layer_template")
    setattr(owner, name, nn.ModuleList(list(layers)[layer + 1 :]))
    try:
        yield
    finally:
        setattr(owner, name, layers)


def last_logprobs_from_stream(
    model: PreTrainedModel, stream: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, last: int = 1
) -> torch.Tensor:
    """Next-token log-probabilities ``(rows, last, vocab)`` at the last ``last`` positions of each
    (left-padded) sequence, computed from a residual stream by whatever layers the model holds (see
    `only_layers_above`)."""
    out = model(inputs_embeds=stream, attention_mask=mask, position_ids=positions, logits_to_keep=last, use_cache=False)
    return out.logits.float().log_softmax(-1)
