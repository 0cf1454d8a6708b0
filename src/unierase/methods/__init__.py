"""Unlearning methods by name, for ``unierase erase --method`` and the benchmarks.

Every method implements `unierase.methods.base.UnlearningMethod` and is built as
``METHODS[name](params, progress)``. A new method is one file implementing that interface (or one
baseline function in `unierase.baselines`) plus one line here.
"""

from __future__ import annotations

from functools import partial

from unierase.baselines.grad_ascent import grad_ascent
from unierase.baselines.grad_diff import grad_diff
from unierase.baselines.idk_sft import idk_sft
from unierase.baselines.npo import npo
from unierase.config import Params
from unierase.methods.base import MethodFactory, UnlearningMethod
from unierase.methods.baseline import FineTuningBaseline
from unierase.methods.unierase import UniErase

METHODS: dict[str, MethodFactory] = {
    "unierase": UniErase,
    "grad_ascent": partial(FineTuningBaseline, grad_ascent),
    "grad_diff": partial(FineTuningBaseline, grad_diff),
    "npo": partial(FineTuningBaseline, npo),
    "idk_sft": partial(FineTuningBaseline, idk_sft),
}

BASELINE_NAMES: tuple[str, ...] = tuple(name for name in METHODS if name != "unierase")


def build_method(name: str, params: Params, progress: bool = True) -> UnlearningMethod:
    """The method registered as ``name``; a `ValueError` listing the known names otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name](params, progress)
