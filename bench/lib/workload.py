"""The data of a benchmark run: generated fictitious authors with nested forget sets, TOFU's general
splits, and the evaluation directories every method is scored on.

Forget sets are nested: the first ``k`` authors of one forget block, for every configured ``k``. The
retain split is everything outside the largest block, so one retain-reference model (trained without
the largest block) has seen none of the authors of any forget set and serves forget quality at every size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from unierase.data.authors import generate_author_benchmark, write_author_benchmark
from unierase.data.facts import Fact, write_facts
from unierase.data.splits import load_split

# TOFU's general-knowledge splits, with wrong options as perturbed answers: model ability and utility.
GENERAL_SPLITS = {"real_authors": "real_authors_perturbed.jsonl", "world_facts": "world_facts_perturbed.jsonl"}


def author_count(num_authors: int, share: float) -> int:
    """Authors to forget for a share of ``num_authors``: rounded up, at least one.

    Raises:
        ValueError: The share is not in (0, 1).
    """
    if not 0 < share < 1:
        raise ValueError(f"forget shares are fractions of the authors in (0, 1), got {share}")
    # round() first: 0.05 * 40 is 2.0000000000000004 in floating point, which must not become 3.
    return max(1, math.ceil(round(share * num_authors, 9)))


def forget_author_counts(num_authors: int, shares: Sequence[float]) -> list[int]:
    """The distinct author counts of ``shares`` (`author_count`), ascending.

    Raises:
        ValueError: No share, a share out of range, or a count that leaves no author to retain.
    """
    if not shares:
        raise ValueError("no forget share given")
    counts = {author_count(num_authors, share) for share in shares}
    if max(counts) >= num_authors:
        raise ValueError(f"forgetting {max(counts)} of {num_authors} authors leaves none to retain")
    return sorted(counts)


@dataclass(frozen=True)
class AuthorWorkload:
    """Generated authors split for a benchmark.

    Attributes:
        splits: ``full`` (every trained author), ``forget`` (the forget block: the last
            ``num_forget_authors`` trained authors), ``retain`` (``full`` minus the block) and
            ``holdout`` (authors never trained on).
        num_authors: Trained authors.
        questions_per_author: Questions per author (consecutive rows).
        seed: Seed of the generator.
    """

    splits: dict[str, list[Fact]]
    num_authors: int
    questions_per_author: int
    seed: int

    @property
    def num_forget_authors(self) -> int:
        """Authors in the forget block."""
        return len(self.splits["forget"]) // self.questions_per_author

    def first_authors(self, count: int) -> list[Fact]:
        """The facts of the first ``count`` authors of the forget block (nested: a smaller set is a prefix)."""
        if not 1 <= count <= self.num_forget_authors:
            raise ValueError(f"the forget block holds {self.num_forget_authors} authors, asked for {count}")
        return self.splits["forget"][: count * self.questions_per_author]

    def author_blocks(self, authors_per_block: int) -> list[list[Fact]]:
        """The forget block cut into consecutive requests of ``authors_per_block`` authors each."""
        size = authors_per_block * self.questions_per_author
        forget = self.splits["forget"]
        return [forget[i : i + size] for i in range(0, len(forget) - size + 1, size)]

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Writes every split as ``out_dir/<name>.jsonl``; returns the paths."""
        return write_author_benchmark(self.splits, out_dir)


def build_author_workload(
    num_authors: int,
    questions_per_author: int,
    num_forget_authors: int,
    num_holdout: int,
    seed: int,
    collisions: bool = False,
) -> AuthorWorkload:
    """Generates the authors (`unierase.data.authors.generate_author_benchmark`): the same ``num_authors``,
    ``questions_per_author``, ``num_holdout`` and seed give the same ``full`` set whatever the forget
    block, so one fine-tuned target serves every benchmark part. With ``collisions`` the forget block's
    authors are renamed after retain authors (first name of one, last name of another): the collision
    set. Its retain split is the one without collisions."""
    splits = generate_author_benchmark(
        num_authors=num_authors,
        questions_per_author=questions_per_author,
        num_forget=num_forget_authors,
        num_holdout=num_holdout,
        seed=seed,
        collisions=collisions,
    )
    return AuthorWorkload(splits, num_authors, questions_per_author, seed)


def general_splits(tofu_dir: str | Path | None, limit: int) -> dict[str, list[Fact]]:
    """TOFU's real-author and world-fact questions (the first ``limit`` of each); empty when ``tofu_dir``
    is None or lacks the files."""
    if tofu_dir is None or limit < 1:
        return {}
    out = {}
    for name, file in GENERAL_SPLITS.items():
        path = Path(tofu_dir) / file
        if path.is_file():
            out[name] = load_split(path)[:limit]
    return out


def write_splits(splits: dict[str, list[Fact]], out_dir: str | Path) -> Path:
    """Writes an evaluation directory (one ``<split>.jsonl`` per split, `unierase.data.splits.load_splits`)."""
    out_dir = Path(out_dir)
    for name, facts in splits.items():
        write_facts(facts, out_dir / f"{name}.jsonl")
    return out_dir
