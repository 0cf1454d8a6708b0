"""Lower-precision passes where the hardware computes them natively (the value optimisation's)."""

from __future__ import annotations

import torch

from unierase.config import ValuePrecision


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matrix products natively: a CUDA GPU that supports it, or a CPU
    whose instruction set oneDNN runs bfloat16 kernels on (AVX-512 or AMX; PyTorch's own check). Elsewhere
    bfloat16 is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN
            return False
    return False


def autocast_dtype(precision: ValuePrecision, device: torch.device, weights: torch.dtype) -> torch.dtype | None:
    """The dtype to autocast to for ``precision`` on ``device``, or None to run as the weights are. ``auto``
    is bfloat16 for float32 weights where `native_bfloat16` holds (weights already in 16 bits stay so)."""
    if precision == "float32" or (precision == "auto" and weights != torch.float32):
        return None
    if precision == "bfloat16":
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"bfloat16 autocast is not available on {device.type}; use float32")
        return torch.bfloat16
    return torch.bfloat16 if native_bfloat16(device) else None
