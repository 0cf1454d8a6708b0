"""Freezing a model's weights for a block that trains something else (a token row, a value vector)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Turns ``requires_grad`` off on every parameter for the block, then restores each by name.

    Frozen weights get no gradients, and backward stops where nothing below needs one.
    Parameters created inside the block (e.g. by resizing) end up frozen.
    """
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags.get(name, False))
