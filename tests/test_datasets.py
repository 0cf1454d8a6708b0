"""Split loading: local TOFU-layout JSON Lines, split kinds, option rows, errors.

.venv/bin/pytest tests/test_datasets.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unierase.data.splits import load_split, load_splits, split_kind

TOFU = Path(__file__).resolve().parents[1] / ".." / "shared" / "tofu"


@pytest.mark.parametrize(
    "name, kind",
    [
        ("forget01_perturbed", "forget"),
        ("forget", "forget"),
        ("holdout05", "holdout"),
        ("real_authors_perturbed", "real_authors"),
        ("world_facts", "world_facts"),
        ("retain_perturbed", "retain"),
        ("anything_else", "retain"),
    ],
)
def test_split_kind(name, kind):
    assert split_kind(name) == kind


@pytest.mark.skipif(not TOFU.is_dir(), reason="../shared/tofu is not present")
def test_reads_the_tofu_copy():
    forget = load_split(TOFU / "forget01_perturbed.jsonl")
    assert len(forget) == 40
    assert len(forget[0].perturbed_answer) == 5 and forget[0].paraphrased_question
    real = load_split(TOFU / "real_authors.jsonl")
    # The option1-4 layout becomes perturbed_answer: the 3 options that are not the answer.
    assert len(real[0].perturbed_answer) == 3
    assert real[0].answer not in real[0].perturbed_answer


def test_load_splits_names_by_stem(tmp_path):
    for name in ("forget", "retain", "world_facts"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"question": f"{name}?", "answer": "x"}) + "\n")
    (tmp_path / "notes.txt").write_text("ignored")
    splits = load_splits(tmp_path)
    assert list(splits) == ["forget", "retain", "world_facts"]
    assert splits["forget"][0].question == "forget?"


def test_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such JSON Lines file"):
        load_split(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_splits(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no .jsonl split"):
        load_splits(tmp_path)


def test_hub_names_go_to_datasets(monkeypatch):
    calls = []

    def fake_load_dataset(name, config, split):
        calls.append((name, config, split))
        return [{"question": "q?", "answer": "a", "option1": "a", "option2": "b"}]

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    facts = load_split("locuslab/TOFU", name="real_authors")
    assert calls == [("locuslab/TOFU", "real_authors", "train")]
    assert facts[0].perturbed_answer == ["b"]
