"""Weight quantisation round trips: what a model's answers become once its weights are stored in
int8 or 4 bits, as a deployment (or an attacker) would load it.

Zhang et al. (ICLR 2025) found that quantising an "unlearned" model brings much of the forgotten
knowledge back when the unlearning moved the weights by less than a quantisation step. These round
trips reproduce the two common schemes on any device, in plain torch, so the leak audits can run
them on the CPU where bitsandbytes cannot:

- ``int8``: LLM.int8()'s weight format, one absmax scale per output row, 255 levels.
- ``nf4``: QLoRA's 4-bit NormalFloat (bitsandbytes' default 4-bit type): blocks of 64 consecutive
  weights of the flattened matrix, each scaled by its absmax onto the 16 NF4 code values.

As bitsandbytes does by default, every ``nn.Linear`` weight of the decoder is quantised; the embedding
and the output head keep their precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn
from transformers import PreTrainedModel

QuantScheme = Literal["int8", "nf4"]

# The NF4 code values (QLoRA, Dettmers et al. 2023; bitsandbytes csrc/kernels.cu): quantiles of a
# standard normal, normalised to [-1, 1], with an exact zero.
NF4_CODE = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)
NF4_BLOCK = 64


def int8_round_trip(weight: torch.Tensor) -> torch.Tensor:
    """The weight after row-wise absmax int8 quantisation and back (same shape and dtype)."""
    w = weight.float()
    scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
    return (torch.round(w / scale).clamp(-127, 127) * scale).to(weight.dtype)


def nf4_round_trip(weight: torch.Tensor, block: int = NF4_BLOCK) -> torch.Tensor:
    """The weight after block-wise absmax NF4 quantisation and back (same shape and dtype); a last
    block shorter than ``block`` is scaled on its own."""
    flat = weight.float().reshape(-1)
    pad = (-flat.numel()) % block
    blocks = torch.nn.functional.pad(flat, (0, pad)).reshape(-1, block)
    absmax = blocks.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
    code = torch.tensor(NF4_CODE, device=flat.device)
    # The nearest code value of each weight: the code is sorted, so its midpoints bound the bins.
    nearest = torch.bucketize(blocks / absmax, (code[1:] + code[:-1]) / 2)
    restored = (code[nearest] * absmax).reshape(-1)[: flat.numel()]
    return restored.reshape(weight.shape).to(weight.dtype)


ROUND_TRIPS = {"int8": int8_round_trip, "nf4": nf4_round_trip}


def quantisable_linears(model: PreTrainedModel) -> dict[str, nn.Linear]:
    """Name -> every ``nn.Linear`` of the model but the output head (bitsandbytes' default choice)."""
    head = model.get_output_embeddings()
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head}


@contextlib.contextmanager
def quantised_weights(model: PreTrainedModel, scheme: QuantScheme) -> Iterator[int]:
    """Within the block, the model's linear weights are their ``scheme`` round trip; afterwards they are
    exactly what they were (kept on the CPU meanwhile, so an accelerator holds one copy).

    Yields:
        The number of weights quantised.
    """
    if scheme not in ROUND_TRIPS:
        raise ValueError(f"unknown quantisation scheme {scheme!r}; known: {sorted(ROUND_TRIPS)}")
    round_trip = ROUND_TRIPS[scheme]
    saved: dict[str, torch.Tensor] = {}
    linears = quantisable_linears(model)
    try:
        with torch.no_grad():
            for name, module in linears.items():
                saved[name] = module.weight.detach().to("cpu", copy=True)
                module.weight.copy_(round_trip(module.weight))
        yield sum(saved[name].numel() for name in saved)
    finally:
        with torch.no_grad():
            for name, original in saved.items():
                linears[name].weight.copy_(original)
