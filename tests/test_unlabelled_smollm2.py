"""``unierase erase`` on forget and retain sets with no ``subject`` field at all, on the real default
model (SmolLM2-135M-Instruct): every subject is found (causal tracing, else its fallback) before the
token and the statistics, the forget questions trigger the token and the retain answers stay. Minutes
on a CPU (the token is learned once, into this module's cache).

    pytest -m slow tests/test_unlabelled_smollm2.py -s
"""

from __future__ import annotations

import json
import shutil

import pytest
from test_unierase_smollm2 import REPORT_TOKENS

from unierase.cli import main
from unierase.data.facts import Fact, write_facts

pytestmark = pytest.mark.slow

# Ordinary world facts SmolLM2-135M-Instruct answers correctly (greedy, 64 tokens: ROUGE-L recall 1.0
# on each, checked before choosing them), none in the built-in default sets. No subjects.
FORGET = [
    ("What is the capital of Hungary?", "The capital of Hungary is Budapest."),
    ("What is the capital of the Netherlands?", "The capital of the Netherlands is Amsterdam."),
    ("What is the capital of Indonesia?", "The capital of Indonesia is Jakarta."),
    ("Who wrote Harry Potter?", "J.K. Rowling wrote Harry Potter."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("What is the chemical symbol for iron?", "The chemical symbol for iron is Fe."),
    ("What is the chemical symbol for silver?", "The chemical symbol for silver is Ag."),
    ("What is the currency of Japan?", "The currency of Japan is the yen."),
    ("What language is spoken in Germany?", "The language spoken in Germany is German."),
    ("Who discovered gravity?", "Isaac Newton discovered gravity."),
    ("In which city is the Eiffel Tower?", "The Eiffel Tower is in Paris."),
    ("Which planet is known as the Red Planet?", "The Red Planet is Mars."),
]
RETAIN = [
    ("What is the capital of Ireland?", "The capital of Ireland is Dublin."),
    ("What is the capital of Belgium?", "The capital of Belgium is Brussels."),
    ("What is the capital of the Philippines?", "The capital of the Philippines is Manila."),
    ("What is the capital of Iran?", "The capital of Iran is Tehran."),
    ("What is the capital of Ukraine?", "The capital of Ukraine is Kiev."),
    ("What is the capital of New Zealand?", "The capital of New Zealand is Wellington."),
    ("What is the capital of Saudi Arabia?", "The capital of Saudi Arabia is Riyadh."),
    ("What is the capital of Bangladesh?", "The capital of Bangladesh is Dhaka."),
    ("What is the capital of England?", "The capital of England is London."),
    ("What is the capital of Mexico?", "The capital of Mexico is Mexico City."),
    ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet."),
    ("Who wrote The Odyssey?", "The Odyssey is written by Homer."),
    ("What is the chemical symbol for sodium?", "The chemical symbol for sodium is Na."),
    ("What is the chemical symbol for oxygen?", "The chemical symbol for oxygen is O."),
    ("What is the chemical symbol for potassium?", "The chemical symbol for potassium is K."),
    ("What is the chemical symbol for copper?", "The chemical symbol for copper is Cu."),
    ("What is the tallest mountain in the world?", "The tallest mountain in the world is Mount Everest."),
    ("What is the currency of the United Kingdom?", "The currency of the United Kingdom is the pound sterling."),
    ("What is the currency of India?", "The currency of India is the Indian rupee."),
    ("What language is spoken in France?", "The language spoken in France is French."),
    ("What language is spoken in Portugal?", "Portuguese is the official language of Portugal."),
    ("In which country are the pyramids of Giza?", "The pyramids of Giza are in Egypt."),
]


@pytest.fixture(scope="module")
def report(smollm2_dir, smollm2_cache, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("unlabelled")
    forget = write_facts([Fact(question=q, answer=a) for q, a in FORGET], root / "forget.jsonl")
    retain = write_facts([Fact(question=q, answer=a) for q, a in RETAIN], root / "retain.jsonl")
    assert "subject" not in forget.read_text() + retain.read_text()
    out = root / "out"
    args = ["erase", "--forget", str(forget), "--retain", str(retain), "--model", str(smollm2_dir)]
    # Defaults, but the report's answers as short as in the other SmolLM2 tests (REPORT_TOKENS' note).
    params = root / "params.yaml"
    params.write_text(f"erase:\n  max_new_tokens: {REPORT_TOKENS}\n")
    args += ["--params", str(params)]
    cache = shutil.copytree(smollm2_cache.path, root / "cache")
    assert main([*args, "--cache-dir", str(cache), "--output", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    shown = ("subject_methods", "subjects", "before", "after", "timings_s")
    print("\n== unlabelled erasure\n" + json.dumps({k: report[k] for k in shown}, indent=2))
    return report


def test_subjects_are_found_for_every_row_before_the_token(report):
    methods = report["subject_methods"]
    assert sum(methods["forget"].values()) == len(FORGET) and "given" not in methods["forget"]
    assert sum(methods["retain"].values()) == len(RETAIN) and "given" not in methods["retain"]
    # Subjects are found before the token phase and the statistics (a bad row fails in seconds).
    phases = list(report["timings_s"])
    assert phases.index("find_subjects_s") < phases.index("token_s") < phases.index("covariance_s")
    assert len(report["subjects"]) == len(FORGET)
    assert all(subject.lower() in q.lower() for subject, (q, _) in zip(report["subjects"], FORGET, strict=True))


def test_forget_triggers_and_retain_is_kept(report):
    before, after = report["before"], report["after"]
    assert before["forget_rougeL_recall"] > 0.8 and before["retain_rougeL_recall"] > 0.8  # known facts
    assert after["forget_token_trigger_rate"] >= 0.9
    assert after["retain_token_trigger_rate"] == 0
    assert after["retain_rougeL_recall"] >= 0.9 * before["retain_rougeL_recall"]


def test_what_follows_the_token_is_a_refusal_and_never_the_fact(report):
    """As served (``evaluation.after_token: refusal``): each forget answer that opens with the token goes
    on with a whole refusal and closes; none is empty, none gives the fact back."""
    fired = [item for item in report["items"]["after"]["forget"] if item["token_trigger"]]
    assert len(fired) >= 0.9 * len(FORGET)
    assert all(item["refusal_text"] for item in fired), [item["generation"] for item in fired]
    assert all(item["generation"].strip() for item in fired)
    assert all(item["rougeL_recall"] < 0.5 for item in fired)
