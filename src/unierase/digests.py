"""Fingerprints: the one way files, directories, texts and in-memory weights are hashed (SHA-256).

A stored version, a data set, a cache entry and a token are all named by these digests, so that
"which bytes produced this?" has one answer everywhere.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

_CHUNK = 1 << 20


def _feed(path: Path, *hashers) -> None:
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            for hasher in hashers:
                hasher.update(chunk)


def file_digests(path: str | Path, algorithms: Iterable[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file under each named ``hashlib`` algorithm, in one chunked read."""
    hashers = {name: hashlib.new(name, usedforsecurity=False) for name in algorithms}
    _feed(Path(path), *hashers.values())
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file."""
    return file_digests(path)["sha256"]


def model_dir_sha256(model_dir: str | Path, exclude: Iterable[str] = ()) -> str:
    """SHA-256 over a model directory's files (relative names and contents, in name order): the
    identity of a stored model, its tokenizer and edit state included. Files named in ``exclude``
    (relative names) are left out."""
    model_dir = Path(model_dir)
    skip = set(exclude)
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file() and str(p.relative_to(model_dir)) not in skip):
        digest.update(str(path.relative_to(model_dir)).encode() + b"\0")
        _feed(path, digest)
    return digest.hexdigest()


def texts_sha256(texts: Iterable[str]) -> str:
    """SHA-256 over texts, in order (each followed by a NUL)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()


def weights_sha256(model: nn.Module, layer_template: str | None = None, up_to_layer: int | None = None) -> str:
    """SHA-256 over a loaded model's parameters (names, shapes, dtypes and bytes).

    Given ``layer_template`` and ``up_to_layer``, only the parameters that the inputs of layers
    ``<= up_to_layer`` depend on are hashed: the layers above and an untied output head are left out,
    which is most of a large model's bytes when the edited layers are early ones.
    """
    skip: set[str] = set()
    if layer_template is not None and up_to_layer is not None:
        layer = re.compile(re.escape(layer_template).replace(r"\{\}", r"(\d+)") + r"\.")
        above = {n for n, _ in model.named_parameters() if (m := layer.match(n)) and int(m.group(1)) > up_to_layer}
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        untied = {id(p) for p in head.parameters()} if head is not None else set()
        untied -= {id(p) for p in model.get_input_embeddings().parameters()}  # a tied head is the embedding
        skip = above | {n for n, p in model.named_parameters() if id(p) in untied}
    digest = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if name in skip:
            continue
        digest.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        digest.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
