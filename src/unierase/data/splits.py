"""Forget, retain and evaluation splits: local JSON Lines in the TOFU layout, or a ``datasets`` hub name.

A data directory for ``unierase evaluate`` holds one ``*.jsonl`` file per split, named by its stem.
What a split is for follows from its name (`split_kind`): ``forget*`` splits are forgotten,
``holdout*`` splits were never trained on (non-members for membership inference), ``real_authors*``
and ``world_facts*`` measure general knowledge, everything else (``retain*`` and others) is retained.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from unierase.data.facts import Fact, load_facts

logger = logging.getLogger(__name__)

SplitKind = Literal["forget", "holdout", "real_authors", "world_facts", "retain"]

_OPTION_KEYS = ("option1", "option2", "option3", "option4")


def split_kind(name: str) -> SplitKind:
    """What a split is for, from its name: forget, holdout, real_authors, world_facts, or retain."""
    for prefix in ("forget", "holdout", "real_authors", "world_facts"):
        if name.startswith(prefix):
            return prefix  # type: ignore[return-value]
    return "retain"


def normalise_fact(fact: Fact) -> Fact:
    """TOFU's multiple-choice rows (``option1``-``option4`` beside ``answer``) get the wrong options as
    ``perturbed_answer``, so every split has one layout; other rows are returned unchanged."""
    extra = fact.model_extra or {}
    if fact.perturbed_answer is None and any(k in extra for k in _OPTION_KEYS):
        wrong = [str(extra[k]) for k in _OPTION_KEYS if k in extra and str(extra[k]) != fact.answer]
        return fact.model_copy(update={"perturbed_answer": wrong or None})
    return fact


def load_split(source: str | Path, name: str | None = None, hub_split: str = "train") -> list[Fact]:
    """Reads one split from a local JSON Lines file or, for a non-path name, from the ``datasets`` hub.

    Args:
        source: A ``.jsonl`` path, or a hub dataset name such as ``locuslab/TOFU``.
        name: The hub configuration (``forget01_perturbed``); ignored for local files.
        hub_split: The hub split to read.

    Raises:
        FileNotFoundError: ``source`` looks like a path (it ends in ``.jsonl`` or names an existing
            location) but is not a file.
    """
    path = Path(source)
    if path.is_file():
        return [normalise_fact(f) for f in load_facts(path)]
    if str(source).endswith(".jsonl") or path.exists() or str(source).startswith((".", "/")):
        raise FileNotFoundError(f"{source}: no such JSON Lines file")
    return load_hub_split(str(source), name=name, hub_split=hub_split)


def load_hub_split(dataset: str, name: str | None = None, hub_split: str = "train") -> list[Fact]:
    """Reads a split from the ``datasets`` hub (needs network access or a filled local cache)."""
    from datasets import load_dataset  # imported here: only hub users pay for it

    rows = load_dataset(dataset, name, split=hub_split)
    logger.info("read %d rows from %s/%s[%s]", len(rows), dataset, name, hub_split)
    return [normalise_fact(Fact.model_validate(dict(row))) for row in rows]


def load_splits(data_dir: str | Path) -> dict[str, list[Fact]]:
    """Every ``*.jsonl`` file in ``data_dir`` as a split named by its stem, in name order.

    Raises:
        FileNotFoundError: ``data_dir`` is not a directory or holds no ``.jsonl`` file.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: not a directory of .jsonl splits")
    files = sorted(data_dir.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"{data_dir}: holds no .jsonl split")
    return {f.stem: load_split(f) for f in files}
