"""The result of an erasure as a weight delta: the new values of every tensor that changed.

A delta holds, for each changed parameter, its value before and after, so `apply_delta` and
`revert_delta` restore exact bytes; embeddings grown by new tokens store only the new rows. Saved as
safetensors; the SHA-256 of the file is its identity in the registry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from unierase.digests import file_sha256

_BEFORE, _AFTER, _APPENDED = "before::", "after::", "appended::"
_HEADER = "unierase.delta"


@dataclass
class WeightDelta:
    """New and old values of the parameters an edit changed.

    Attributes:
        after: Parameter name -> value after the edit (same-shape tensors that changed).
        before: Parameter name -> value before the edit, for exact revert.
        appended: Parameter name -> rows added at the end (embeddings grown by new tokens whose
            existing rows are untouched), so a 49k-row embedding costs one row, not two copies.
        base_rows: Parameter name -> its row count before rows were appended.
        metadata: String metadata saved with the file (method, layers, token names).
    """

    after: dict[str, torch.Tensor] = field(default_factory=dict)
    before: dict[str, torch.Tensor] = field(default_factory=dict)
    appended: dict[str, torch.Tensor] = field(default_factory=dict)
    base_rows: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Names of the changed parameters."""
        return sorted({*self.after, *self.appended})

    def num_changed(self) -> int:
        """Number of scalar parameters whose value differs, new rows included."""
        changed = sum(int((self.after[k] != self.before[k]).sum()) for k in self.after)
        return changed + sum(v.numel() for v in self.appended.values())


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter (tied parameters appear once, under their first name)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def diff_models(
    before: dict[str, torch.Tensor], model: nn.Module, metadata: dict[str, str] | None = None
) -> WeightDelta:
    """The delta between a snapshot and a model's current parameters; unchanged tensors are left out.

    Raises:
        ValueError: A parameter is new, or shrank, or grew in a dimension other than the first.
    """
    delta = WeightDelta(metadata=dict(metadata or {}))
    for name, p in model.named_parameters():
        new, old = p.detach(), before.get(name)
        if old is None:
            raise ValueError(f"{name} is not in the snapshot: an edit may change parameters, not add them")
        if old.shape == new.shape:
            if not torch.equal(old, new):
                delta.after[name], delta.before[name] = new.clone(), old.clone()
        elif old.shape[1:] == new.shape[1:] and new.shape[0] > old.shape[0]:
            if torch.equal(old, new[: old.shape[0]]):
                delta.appended[name] = new[old.shape[0] :].clone()
                delta.base_rows[name] = old.shape[0]
            else:
                raise ValueError(f"{name} grew and its existing rows changed; such a delta cannot be reverted")
        else:
            raise ValueError(f"{name} changed shape from {tuple(old.shape)} to {tuple(new.shape)}")
    return delta


def apply_delta(model: nn.Module, delta: WeightDelta) -> None:
    """Sets every changed parameter to its value after the edit.

    A delta that appends rows needs the model's embeddings already grown to match (see
    `unierase.token.learning.add_unlearning_tokens`); missing or mismatched tensors are errors, and
    nothing is written unless every tensor matches.
    """
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in delta.names:
            if name not in params:
                raise KeyError(f"the delta changes {name!r}, which this model does not have")
        for name, value in delta.after.items():
            _check_shape(name, params[name], value.shape)
        for name, rows in delta.appended.items():
            _check_shape(name, params[name], torch.Size([delta.base_rows[name] + rows.shape[0], *rows.shape[1:]]))
        for name, value in delta.after.items():
            params[name].copy_(value.to(params[name].dtype))
        for name, rows in delta.appended.items():
            params[name][delta.base_rows[name] :].copy_(rows.to(params[name].dtype))


def revert_delta(model: nn.Module, delta: WeightDelta) -> None:
    """Restores every changed parameter to its exact value before the edit. Appended rows are
    dropped by resizing the token embeddings back (a transformers model is needed for that)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, old in delta.before.items():
            _check_shape(name, params[name], old.shape)
            params[name].copy_(old)
    if delta.appended:
        sizes = set(delta.base_rows.values())
        if len(sizes) != 1 or not hasattr(model, "resize_token_embeddings"):
            raise ValueError("appended rows can only be reverted on a transformers model with one vocabulary size")
        model.resize_token_embeddings(sizes.pop())


def _check_shape(name: str, param: torch.Tensor, shape: torch.Size) -> None:
    if param.shape != shape:
        raise ValueError(f"{name}: the model's shape {tuple(param.shape)} is not the delta's {tuple(shape)}")


def save_delta(delta: WeightDelta, path: str | Path) -> str:
    """Writes the delta as safetensors and returns the file's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {_AFTER + k: v.contiguous() for k, v in delta.after.items()}
    tensors.update({_BEFORE + k: v.contiguous() for k, v in delta.before.items()})
    tensors.update({_APPENDED + k: v.contiguous() for k, v in delta.appended.items()})
    # One metadata entry: safetensors writes several in an order that varies between runs, which would
    # give the same delta a different SHA-256 each time.
    meta = {_HEADER: json.dumps({"metadata": delta.metadata, "base_rows": delta.base_rows}, sort_keys=True)}
    save_file(tensors, str(path), metadata=meta)
    return file_sha256(path)


def load_delta(path: str | Path, expected_sha256: str | None = None) -> WeightDelta:
    """Reads a delta; with ``expected_sha256`` the file's digest must match (tampering, truncation)."""
    path = Path(path)
    if expected_sha256 is not None and (actual := file_sha256(path)) != expected_sha256:
        raise ValueError(f"{path}: SHA-256 {actual} does not match the expected {expected_sha256}")
    with safe_open(str(path), framework="pt") as fh:
        header = fh.metadata() or {}
    if _HEADER in header:
        body = json.loads(header[_HEADER])
        metadata, base_rows = body["metadata"], body["base_rows"]
    else:  # written before the header was one entry
        metadata, base_rows = json.loads(header.get("unierase", "{}")), json.loads(header.get("base_rows", "{}"))
    tensors = load_file(str(path))

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    return WeightDelta(
        after=part(_AFTER), before=part(_BEFORE), appended=part(_APPENDED), base_rows=base_rows, metadata=metadata
    )
