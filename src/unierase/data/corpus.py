"""General text for the preserved-key statistics: local files read directly, hub datasets through ``datasets``.

``builtin`` is the corpus shipped in the package (paragraphs on everyday topics written by the
default model: see scripts/make_builtin_corpus.py), so the default run is offline. A path to a local
``.txt`` (one text a line) or ``.jsonl``/``.json`` file, or a hub dataset name when online, replace it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from unierase.config import CovarianceConfig


def builtin_corpus_path() -> Path:
    """Path of the shipped corpus file."""
    return Path(str(resources.files("unierase.data") / "resources" / "general_text.jsonl"))


def load_corpus(config: CovarianceConfig) -> list[str]:
    """The first ``num_samples`` non-empty texts of the configured corpus.

    Raises:
        ValueError: The corpus has no text, or lacks the configured text field.
    """
    source = str(builtin_corpus_path()) if config.corpus == "builtin" else config.corpus
    texts: list[str] = []
    for row in _rows(source):
        if config.text_field not in row:
            raise ValueError(f"corpus {source!r} has no field {config.text_field!r} (covariance.text_field)")
        text = (row[config.text_field] or "").strip()
        if text:
            texts.append(text)
        if len(texts) >= config.num_samples:
            break
    if not texts:
        raise ValueError(f"corpus {source!r} holds no text")
    return texts


def _rows(source: str) -> Iterator[dict]:
    """Rows of a local JSON Lines or text file (read directly: the built-in corpus needs no ``datasets``),
    of another local file through ``datasets``, or of a hub dataset, streamed."""
    path = Path(source)
    if path.suffix in (".jsonl", ".txt") and path.is_file():
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line) if path.suffix == ".jsonl" else {"text": line.rstrip("\n")}
        return
    from datasets import load_dataset

    if path.exists():
        yield from load_dataset("json", data_files=str(path), split="train")
    else:
        yield from load_dataset(source, split="train", streaming=True)
