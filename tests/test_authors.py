"""The fictitious-author generator: seeded, TOFU layout, perturbations that differ only in the fact.

.venv/bin/pytest tests/test_authors.py -q
"""

from __future__ import annotations

from unierase.data.authors import generate_author_benchmark, write_author_benchmark
from unierase.data.splits import load_splits


def test_same_seed_same_set_other_seed_other_set():
    a = generate_author_benchmark(num_authors=6, questions_per_author=4, num_forget=1, num_holdout=2, seed=3)
    b = generate_author_benchmark(num_authors=6, questions_per_author=4, num_forget=1, num_holdout=2, seed=3)
    c = generate_author_benchmark(num_authors=6, questions_per_author=4, num_forget=1, num_holdout=2, seed=4)
    assert a == b
    assert a["full"] != c["full"]


def test_split_layout():
    splits = generate_author_benchmark(num_authors=5, questions_per_author=3, num_forget=2, num_holdout=1, seed=0)
    assert len(splits["full"]) == 15 and len(splits["forget"]) == 6 and len(splits["retain"]) == 9
    assert splits["retain"] + splits["forget"] == splits["full"]
    assert len(splits["holdout"]) == 3
    trained = {f.subject for f in splits["full"]}
    held = {f.subject for f in splits["holdout"]}
    assert len(trained) == 5 and len(held) == 1 and not trained & held
    assert not {f.subject for f in splits["forget"]} & {f.subject for f in splits["retain"]}


def test_every_item_has_paraphrases_and_three_distinct_perturbations():
    splits = generate_author_benchmark(num_authors=4, questions_per_author=8, num_forget=1, num_holdout=1, seed=1)
    for fact in splits["full"] + splits["holdout"]:
        assert fact.subject and fact.subject in fact.question
        assert fact.paraphrased_question and fact.paraphrased_question != fact.question
        assert fact.paraphrased_answer and fact.paraphrased_answer != fact.answer
        perturbed = fact.perturbed_answer
        assert len(perturbed) == 3 and len(set(perturbed)) == 3
        assert fact.paraphrased_answer not in perturbed
        # Same sentence as the paraphrase with only the value swapped: the shared prefix and
        # suffix together cover most of the paraphrase.
        for p in perturbed:
            prefix = len(_common_prefix(p, fact.paraphrased_answer))
            suffix = len(_common_prefix(p[::-1], fact.paraphrased_answer[::-1]))
            assert prefix + suffix >= len(fact.subject)


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def test_written_benchmark_reads_back_as_splits(tmp_path):
    splits = generate_author_benchmark(num_authors=3, questions_per_author=2, num_forget=1, num_holdout=1, seed=0)
    write_author_benchmark({k: v for k, v in splits.items() if k != "full"}, tmp_path)
    read = load_splits(tmp_path)
    assert set(read) == {"forget", "retain", "holdout"}
    assert read["forget"] == splits["forget"]


def test_collision_set_names_each_forget_author_after_two_kept_ones():
    splits = generate_author_benchmark(
        num_authors=6, questions_per_author=2, num_forget=2, num_holdout=1, seed=0, collisions=True
    )
    kept = {f.subject for f in splits["retain"]}
    firsts, lasts = {n.split(" ", 1)[0] for n in kept}, {n.split(" ", 1)[1] for n in kept}
    forgotten = {f.subject for f in splits["forget"]}
    assert len(forgotten) == 2 and not forgotten & kept
    for name in forgotten:
        first, last = name.split(" ", 1)
        assert first in firsts and last in lasts
        # from two different kept authors: no kept author has both parts
        assert not any(k.startswith(first + " ") and k.endswith(" " + last) for k in kept)
        assert all(name in f.question for f in splits["forget"] if f.subject == name)
    assert (
        splits["retain"]
        == generate_author_benchmark(num_authors=6, questions_per_author=2, num_forget=2, num_holdout=1, seed=0)[
            "retain"
        ]
    )


def test_too_few_authors_for_collisions_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="name collisions"):
        generate_author_benchmark(num_authors=2, questions_per_author=1, num_forget=1, num_holdout=1, collisions=True)
