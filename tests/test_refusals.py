"""Refusal phrases: enough of them, chosen stably, recognised in text.

pytest tests/test_refusals.py
"""

import subprocess
import sys

from unierase.token.refusals import REFUSALS, is_refusal, pick_refusal, stable_index


def test_at_least_fifty_distinct_refusals_all_recognised():
    assert len(set(REFUSALS)) >= 50
    assert all(is_refusal(r) for r in REFUSALS)


def test_ordinary_answers_are_not_refusals():
    for text in ["The capital of France is Paris.", "Alexander Fleming discovered penicillin.", "It is 100 degrees."]:
        assert not is_refusal(text)


def test_choice_is_stable_across_processes():
    # Python's hash() is salted per process; the pick must not be.
    code = "from unierase.token.refusals import pick_refusal; print(pick_refusal('What is the capital of France?'))"
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout for _ in range(2)}
    assert runs == {pick_refusal("What is the capital of France?") + "\n"}


def test_choice_spreads_over_the_list():
    picks = {stable_index(f"question {i}", len(REFUSALS)) for i in range(500)}
    assert len(picks) > 40
