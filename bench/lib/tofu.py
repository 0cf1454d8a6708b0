"""TOFU's own authors as a benchmark workload: a target fine-tuned on some of TOFU's 200 authors (all 20
questions each), among them the authors of TOFU's forget splits, erased with TOFU's forget sets.

TOFU's forget splits are suffixes of ``full.jsonl`` (forget01 is the last 2 authors, forget05 the last 10),
so each smaller one lies inside the larger. The forget block is the largest split's authors in reverse
order, which puts every smaller split first: the workload's "first k authors" (`AuthorWorkload.first_authors`)
is then exactly TOFU's forget split of k authors. The retain side is TOFU's first authors, the retain
reference model is fine-tuned on them alone (TOFU's protocol: a model that never saw the forget authors),
and their evaluation rows carry TOFU's paraphrased and perturbed answers where ``retain_perturbed.jsonl``
has them (its first 20 authors).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.lib.workload import AuthorWorkload
from unierase.data.facts import Fact
from unierase.data.splits import load_split

QUESTIONS_PER_AUTHOR = 20  # TOFU: 20 question/answer pairs per author, authors in consecutive blocks
FORGET_SPLITS = ("forget01", "forget05", "forget10")


def author_labels(tofu_dir: str | Path, facts: Sequence[Fact]) -> list[str]:
    """Each author in ``facts`` (whole authors, in order) as its place in TOFU's ``full.jsonl``
    (``TOFU author 200``): results name TOFU's authors without copying TOFU's text into the project."""
    blocks = _authors(load_split(Path(tofu_dir) / "full.jsonl"))
    place = {tuple((f.question, f.answer) for f in block): n for n, block in enumerate(blocks, start=1)}
    return [f"TOFU author {place[tuple((f.question, f.answer) for f in block)]}" for block in _authors(facts)]


def _authors(rows: Sequence[Fact]) -> list[list[Fact]]:
    if len(rows) % QUESTIONS_PER_AUTHOR:
        raise ValueError(f"{len(rows)} rows are not whole authors of {QUESTIONS_PER_AUTHOR} questions")
    return [list(rows[i : i + QUESTIONS_PER_AUTHOR]) for i in range(0, len(rows), QUESTIONS_PER_AUTHOR)]


def _perturbed(plain: list[Fact], perturbed: list[Fact]) -> list[Fact]:
    """``plain`` with each row replaced by the perturbed file's row of the same question and answer."""
    by_pair = {(f.question, f.answer): f for f in perturbed}
    return [by_pair.get((f.question, f.answer), f) for f in plain]


def build_tofu_workload(
    tofu_dir: str | Path, num_authors: int, forget_splits: Sequence[str], num_holdout: int
) -> tuple[AuthorWorkload, dict[int, str]]:
    """TOFU's first ``num_authors - F`` authors and the ``F`` authors of its largest forget split in
    ``forget_splits``, as a workload whose ``first_authors(k)`` is TOFU's forget split of ``k`` authors.

    Returns:
        The workload (``full``: the trained authors' plain rows; ``forget``: the forget block, perturbed
        rows; ``retain``: the other trained authors; ``holdout``: the first ``num_holdout`` authors of
        ``holdout10.jsonl``, never trained on) and forget author count -> TOFU split name.

    Raises:
        ValueError: An unknown forget split, files missing, or too few authors to train besides the forget block.
    """
    tofu_dir = Path(tofu_dir)
    if unknown := [s for s in forget_splits if s not in FORGET_SPLITS]:
        raise ValueError(f"unknown TOFU forget split(s) {unknown}; choose from {list(FORGET_SPLITS)}")
    if not forget_splits:
        raise ValueError("no TOFU forget split given")
    needed = ["full.jsonl", "retain_perturbed.jsonl", "holdout10.jsonl"] + [
        f"{s}_perturbed.jsonl" for s in forget_splits
    ]
    if missing := [n for n in needed if not (tofu_dir / n).is_file()]:
        raise ValueError(f"{tofu_dir} lacks TOFU's {', '.join(missing)}")
    full = _authors(load_split(tofu_dir / "full.jsonl"))
    rows = {s: load_split(tofu_dir / f"{s}_perturbed.jsonl") for s in forget_splits}
    sizes = {len(rows[s]) // QUESTIONS_PER_AUTHOR: s for s in forget_splits}
    largest = max(sizes)
    if not 0 < largest < num_authors <= len(full):
        raise ValueError(
            f"--tofu-authors {num_authors}: needs more than the {largest} forget authors and at most TOFU's {len(full)}"
        )
    block = _authors(rows[sizes[largest]])
    if [f.question for a in block for f in a] != [f.question for a in full[-largest:] for f in a]:
        raise ValueError(f"{sizes[largest]}_perturbed.jsonl is not the last {largest} authors of full.jsonl")
    block.reverse()  # TOFU's smaller forget splits are its last authors: now the first ones of the block
    for k, name in sizes.items():
        if {f.question for f in rows[name]} != {f.question for a in block[:k] for f in a}:
            raise ValueError(f"{name} is not the last {k} authors of {sizes[largest]}: TOFU's splits are nested")
    kept = full[: num_authors - largest]
    retain = _perturbed([f for a in kept for f in a], load_split(tofu_dir / "retain_perturbed.jsonl"))
    forget = [f for a in block for f in a]
    plain_forget = [Fact(question=f.question, answer=f.answer) for f in forget]
    holdout = load_split(tofu_dir / "holdout10.jsonl")[: num_holdout * QUESTIONS_PER_AUTHOR]
    splits = {
        "full": [Fact(question=f.question, answer=f.answer) for f in retain] + plain_forget,
        "forget": forget,
        "retain": retain,
        "holdout": holdout,
    }
    return AuthorWorkload(splits, num_authors, QUESTIONS_PER_AUTHOR, seed=0), {k: sizes[k] for k in sorted(sizes)}
