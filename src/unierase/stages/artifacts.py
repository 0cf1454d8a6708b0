"""The files a stage writes beside a transformers model directory, and reads back: a learned unlearning
token (a small safetensors file) and the edit state (``edit_state.safetensors`` in an erased model's
directory, so a later erasure, in another process, keeps the earlier ones edited), and the keys of
the requests an erasure run applied (``key_blocks.safetensors`` beside its delta: what the registry
stores instead of the accumulated state)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unierase.edit.state import EditState
from unierase.token.vocabulary import UnlearningToken

STATE_FILE = "edit_state.safetensors"
# Beside the state file: the retain answers the lineage holds (`EditState.own_answers`).
OWN_ANSWERS_FILE = "held_answers.json"
KEY_BLOCKS_FILE = "key_blocks.safetensors"
_STATE_KEY = re.compile(r"^(previous_keys|preserved)\.(\d+)$")
_BLOCK_KEY = re.compile(r"^(\d+)\.(\d+)$")


def save_token(token: UnlearningToken, path: str | Path) -> None:
    """Writes a learned token as a small safetensors file (its rows and names)."""
    tensors = {"input_rows": token.input_rows.contiguous()}
    if token.output_rows is not None:
        tensors["output_rows"] = token.output_rows.contiguous()
    # One metadata entry, so that the same token gives the same bytes (safetensors orders several freely).
    meta = {"unierase.token": json.dumps({"names": token.names, "losses": token.losses, "seconds": token.seconds})}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def load_token(path: str | Path) -> UnlearningToken:
    """Reads a token written by `save_token`."""
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if "unierase.token" in meta:
        body = json.loads(meta["unierase.token"])
    else:  # written before the metadata was one entry
        body = {k: json.loads(meta[k]) for k in ("names", "losses", "seconds") if k in meta}
    if "input_rows" not in tensors or "names" not in body:
        raise ValueError(f"{path} is not an unlearning-token file (no input_rows or names)")
    return UnlearningToken(
        names=list(body["names"]),
        input_rows=tensors["input_rows"],
        output_rows=tensors.get("output_rows"),
        losses=list(body.get("losses", [])),
        seconds=float(body.get("seconds", 0.0)),
    )


def save_state(state: EditState, path: str | Path) -> None:
    """Writes the state as safetensors: ``previous_keys.{layer}`` and ``preserved.{layer}``; and, where it
    holds own answers, `OWN_ANSWERS_FILE` beside it (question digests and token ids, no text)."""
    tensors = {f"previous_keys.{layer}": t.contiguous() for layer, t in state.previous_keys.items()}
    tensors.update({f"preserved.{layer}": t.contiguous() for layer, t in state.preserved.items()})
    save_file(tensors, str(path), metadata={"num_requests": str(state.num_requests)})
    if state.own_answers:
        body = {"tokens": state.own_answer_tokens, "answers": {d: list(a) for d, a in state.own_answers.items()}}
        (Path(path).parent / OWN_ANSWERS_FILE).write_text(json.dumps(body, sort_keys=True), encoding="utf-8")


def load_state(path: str | Path) -> EditState:
    """Reads a state written by `save_state` (with the own answers beside it, where there are any)."""
    state = EditState()
    with safe_open(str(path), framework="pt") as fh:
        state.num_requests = int((fh.metadata() or {}).get("num_requests", 0))
        for key in fh.keys():
            match = _STATE_KEY.match(key)
            if match is None:
                raise ValueError(f"{path}: unexpected tensor {key!r} in an edit state file")
            getattr(state, match.group(1))[int(match.group(2))] = fh.get_tensor(key)
    answers = Path(path).parent / OWN_ANSWERS_FILE
    if answers.is_file():
        body = json.loads(answers.read_text(encoding="utf-8"))
        if not isinstance(body, dict) or not isinstance(body.get("answers"), dict):
            raise ValueError(f"{answers}: not a held-answers file (no 'answers' object)")
        state.own_answers = {d: tuple(int(t) for t in ids) for d, ids in body["answers"].items()}
        state.own_answer_tokens = body.get("tokens")
    return state


def save_key_blocks(
    factors: list[dict[int, torch.Tensor]],
    path: str | Path,
    preserved_cache_key: str | None,
    statistics_settings: dict | None = None,
) -> None:
    """Writes each request's keys (``{request}.{layer}``, oldest request first) and, after a first edit,
    where its preserved statistics came from: the statistics cache key and the settings that computed
    them (``covariance``, ``model`` and ``edit.layers``), so a rebuild elsewhere can compute them again.
    Both None when the statistics came from the parent's edit state."""
    tensors = {f"{i}.{layer}": k.contiguous() for i, block in enumerate(factors) for layer, k in block.items()}
    body = {"requests": len(factors), "preserved_cache_key": preserved_cache_key, "statistics": statistics_settings}
    save_file(tensors, str(path), metadata={"unierase.key_blocks": json.dumps(body, sort_keys=True)})


def load_key_blocks(path: str | Path) -> tuple[list[dict[int, torch.Tensor]], dict]:
    """Reads `save_key_blocks`'s file: the keys of each request, and its metadata
    (``preserved_cache_key``, ``statistics``)."""
    with safe_open(str(path), framework="pt") as fh:
        body = json.loads((fh.metadata() or {}).get("unierase.key_blocks", "{}"))
        tensors = {key: fh.get_tensor(key) for key in fh.keys()}
    if "requests" not in body:
        raise ValueError(f"{path} is not a key-blocks file (no unierase.key_blocks metadata)")
    factors: list[dict[int, torch.Tensor]] = [{} for _ in range(int(body["requests"]))]
    for key, tensor in tensors.items():
        match = _BLOCK_KEY.match(key)
        if match is None:
            raise ValueError(f"{path}: unexpected tensor {key!r} in a key-blocks file")
        factors[int(match.group(1))][int(match.group(2))] = tensor
    return [dict(sorted(block.items())) for block in factors], body
