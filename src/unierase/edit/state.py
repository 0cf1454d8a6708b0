"""What sequential erasures carry from one request to the next: AlphaEdit's accumulated keys of earlier
edits and the preserved-key statistics fixed at the first edit.

The accumulated ``C_prev`` of a layer is a sum of one ``K Kᵀ`` block per request, each made by
`key_block` from that request's keys ``K`` (d_in x n, n the request's facts): `accumulate` is the one
place the sum is taken, so replaying the stored keys of each request, in order, gives the accumulated
matrices bit for bit (the registry stores the small ``K`` instead of the d_in x d_in sums).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from unierase.edit.nullspace import NullSpace


@dataclass
class EditState:
    """What sequential erasures carry from one request to the next (saved beside the model).

    Attributes:
        previous_keys: Layer -> accumulated ``K Kᵀ`` of every earlier edit (AlphaEdit's ``C_prev``).
        preserved: Layer -> second moment of the preserved keys, fixed at the first edit (AlphaEdit
            computes its projection once, on the unedited model).
        num_requests: How many requests have been applied.
        key_factors: Layer -> keys ``K`` (float64, d_in x n) of each request applied since the state
            was loaded, oldest first. Not saved with the state: the registry stores them in place of
            the accumulated matrices (`unierase.registry.packing`).
        null_spaces: Layer -> the projector made from ``preserved`` at ``null_space_threshold``: the one
            factorisation of the preserved keys, reused by the next request in this process (not saved:
            made again, in seconds, after a load).
        null_space_threshold: The relative threshold ``null_spaces`` were made with.
        own_answers: `question_digest` of a retain question -> the model's own greedy answer to it (token
            ids), read before the first request of this lineage that held it; later requests hold the same
            answer instead of reading it again. Saved beside the state file, not in it (the registry
            rebuilds that file's bytes from the key blocks), for the last request's retain questions only.
        own_answer_tokens: How many tokens each of ``own_answers`` was read to (``edit.held_own_answer_tokens``).
    """

    previous_keys: dict[int, torch.Tensor] = field(default_factory=dict)
    preserved: dict[int, torch.Tensor] = field(default_factory=dict)
    num_requests: int = 0
    key_factors: list[dict[int, torch.Tensor]] = field(default_factory=list)
    null_spaces: dict[int, NullSpace] = field(default_factory=dict)
    null_space_threshold: float | None = None
    own_answers: dict[str, tuple[int, ...]] = field(default_factory=dict)
    own_answer_tokens: int | None = None


def question_digest(question: str) -> str:
    """The SHA-256 of a question's text: what the held own answers are filed under (the state beside a
    model keeps no retain question's text)."""
    return hashlib.sha256(question.encode("utf-8")).hexdigest()


def key_block(keys: torch.Tensor) -> torch.Tensor:
    """``K Kᵀ`` of one request's keys (d_in x n), on the CPU in float64, stored as float32: the term a
    request adds to ``C_prev``. Computed in one place, on one device, so a replay gives the same bits."""
    keys = keys.detach().to("cpu", torch.float64)
    return (keys @ keys.T).float()


def accumulate(previous: dict[int, torch.Tensor], factors: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """``C_prev`` after one more request: ``previous`` plus each layer's `key_block` (a layer the
    request did not edit is dropped, as the edit state keeps the edited layers only)."""
    out = {}
    for layer, keys in factors.items():
        block = key_block(keys)
        out[layer] = previous.get(layer, torch.zeros_like(block)) + block
    return out
