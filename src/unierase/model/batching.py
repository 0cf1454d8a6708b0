"""Padding token-id sequences into a batch: the one routine every forward pass over several sequences
uses (value optimisation, keys, token learning, the QA loss, statistics, generation, probabilities)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

IGNORE_INDEX = -100  # label of a position that carries no loss (padding, the prompt)


@dataclass
class PaddedBatch:
    """Sequences padded to one width.

    Attributes:
        input_ids: (batch, width) token ids, padding filled with the pad id.
        attention_mask: (batch, width) 1 on real tokens, 0 on padding.
        labels: (batch, width) labels, `IGNORE_INDEX` on padding; None when none were given.
        shifts: Per row, how many pad positions precede the sequence (0 with right padding): a
            position ``i`` of sequence ``r`` sits at column ``i + shifts[r]``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None
    shifts: list[int]

    def position_ids(self) -> torch.Tensor:
        """Positions that count real tokens only, so a left-padded row computes what it would alone."""
        return (self.attention_mask.cumsum(1) - 1).clamp_min(0)

    def to(self, device: torch.device | str) -> PaddedBatch:
        """The same batch on ``device``."""
        labels = self.labels.to(device) if self.labels is not None else None
        return PaddedBatch(self.input_ids.to(device), self.attention_mask.to(device), labels, self.shifts)

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask`` (and ``labels`` when present) for a model call."""
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.labels is not None:
            out["labels"] = self.labels
        return out


def pad_sequences(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    side: Literal["right", "left"] = "right",
    labels: Sequence[Sequence[int]] | None = None,
) -> PaddedBatch:
    """Pads sequences (and their labels) to the longest one.

    Right padding keeps every token at its own position (keys at known indices, labels aligned); left
    padding ends every row at the last column (one next-token row each, as generation needs).

    Args:
        sequences: Token ids, one list per row; none may be empty.
        pad_id: Id written into padding.
        side: Where the padding goes.
        labels: Per row, labels as long as its sequence or shorter (the rest is `IGNORE_INDEX`).
    """
    if not sequences:
        raise ValueError("nothing to pad: no sequences")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    out_labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long) if labels is not None else None
    shifts = []
    for row, seq in enumerate(sequences):
        shift = width - len(seq) if side == "left" else 0
        ids[row, shift : shift + len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, shift : shift + len(seq)] = 1
        if out_labels is not None and len(labels[row]):
            out_labels[row, shift : shift + len(labels[row])] = torch.tensor(labels[row], dtype=torch.long)
        shifts.append(shift)
    return PaddedBatch(ids, mask, out_labels, shifts)


def shared_head(sequences: Sequence[Sequence[int]]) -> int:
    """How many first tokens every sequence shares, leaving each at least one of its own: the chat
    template's system turn and user header, the same in every chat-formatted prompt, whose attention a
    batch can compute once."""
    limit, n = min(len(s) for s in sequences) - 1, 0
    while n < limit and all(s[n] == sequences[0][n] for s in sequences):
        n += 1
    return n
