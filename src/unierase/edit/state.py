"""Saving and loading the sequential-erasure state (``edit_state.safetensors`` in a model directory),
so a later erasure run, in another process, keeps the earlier ones edited."""

from __future__ import annotations

import re
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from unierase.edit.erasure import EditState

_KEY = re.compile(r"^(previous_keys|preserved)\.(\d+)$")


def save_state(state: EditState, path: str | Path) -> None:
    """Writes the state as safetensors: ``previous_keys.{layer}`` and ``preserved.{layer}``."""
    tensors = {f"previous_keys.{layer}": t.contiguous() for layer, t in state.previous_keys.items()}
    tensors.update({f"preserved.{layer}": t.contiguous() for layer, t in state.preserved.items()})
    save_file(tensors, str(path), metadata={"num_requests": str(state.num_requests)})


def load_state(path: str | Path) -> EditState:
    """Reads a state written by `save_state`."""
    state = EditState()
    with safe_open(str(path), framework="pt") as fh:
        state.num_requests = int((fh.metadata() or {}).get("num_requests", 0))
        for key in fh.keys():
            match = _KEY.match(key)
            if match is None:
                raise ValueError(f"{path}: unexpected tensor {key!r} in an edit state file")
            getattr(state, match.group(1))[int(match.group(2))] = fh.get_tensor(key)
    return state
