"""What sequential erasures carry from one request to the next: AlphaEdit's accumulated keys of earlier
edits and the preserved-key statistics fixed at the first edit."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class EditState:
    """What sequential erasures carry from one request to the next (saved beside the model).

    Attributes:
        previous_keys: Layer -> accumulated ``K Kᵀ`` of every earlier edit (AlphaEdit's ``C_prev``).
        preserved: Layer -> second moment of the preserved keys, fixed at the first edit (AlphaEdit
            computes its projection once, on the unedited model).
        num_requests: How many requests have been applied.
    """

    previous_keys: dict[int, torch.Tensor] = field(default_factory=dict)
    preserved: dict[int, torch.Tensor] = field(default_factory=dict)
    num_requests: int = 0
