"""The quality benchmark's TOFU workload (`bench.lib.tofu`): TOFU's own authors, its forget splits as the
forget sizes, nested so that the first k authors are exactly TOFU's split of k authors.

.venv/bin/pytest tests/test_tofu_workload.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import flow_repo  # noqa: F401  (puts the repo root on sys.path, for bench/)
import pytest

from bench.lib.tofu import author_labels, build_tofu_workload

TOFU = Path(__file__).resolve().parents[1] / ".." / "shared" / "tofu"
pytestmark = pytest.mark.skipif(not TOFU.is_dir(), reason="../shared/tofu is not present")


def _questions(name: str) -> list[str]:
    return [json.loads(line)["question"] for line in (TOFU / name).read_text().splitlines() if line.strip()]


def test_forget_sizes_are_tofus_splits_and_the_retain_side_never_holds_them():
    workload, sizes = build_tofu_workload(TOFU, 40, ["forget05", "forget01"], num_holdout=2)
    assert sizes == {2: "forget01", 10: "forget05"}
    assert {k: len(v) for k, v in workload.splits.items()} == {"full": 800, "forget": 200, "retain": 600, "holdout": 40}
    for k, split in sizes.items():
        assert {f.question for f in workload.first_authors(k)} == set(_questions(f"{split}.jsonl"))
    full = _questions("full.jsonl")
    retain = [f.question for f in workload.splits["retain"]]
    assert retain == full[:600]  # TOFU's first 30 authors, in order
    assert not set(retain) & set(_questions("forget05.jsonl"))
    assert [f.question for f in workload.splits["full"]] == retain + [f.question for f in workload.splits["forget"]]
    # Forget rows carry TOFU's perturbations (truth ratio); so do the retain rows retain_perturbed has.
    assert all(f.perturbed_answer and f.paraphrased_answer for f in workload.splits["forget"])
    assert all(f.perturbed_answer for f in workload.splits["retain"][:400])
    assert not any(f.perturbed_answer for f in workload.splits["full"])  # fine-tuned on question/answer only
    assert not set(_questions("holdout10.jsonl")[:40]) & set(full)


@pytest.mark.parametrize(
    ("authors", "splits", "message"),
    [
        (10, ["forget05"], "needs more than the 10"),
        (40, ["forget02"], "unknown TOFU forget split"),
        (40, [], "no TOFU"),
    ],
)
def test_bad_requests_are_named(authors, splits, message):
    with pytest.raises(ValueError, match=message):
        build_tofu_workload(TOFU, authors, splits, num_holdout=1)


def test_results_label_tofus_authors_by_their_place_in_full_jsonl():
    workload, _ = build_tofu_workload(TOFU, 12, ["forget01"], num_holdout=1)
    assert author_labels(TOFU, workload.splits["forget"]) == ["TOFU author 200", "TOFU author 199"]
    assert author_labels(TOFU, workload.splits["retain"]) == [f"TOFU author {i}" for i in range(1, 11)]
    with pytest.raises(ValueError, match="not whole authors"):
        author_labels(TOFU, workload.splits["retain"][:30])
