"""Phase I on the retain set's questions too (``token.domain_questions``).

* Which questions: the ordinary ones as before, then a seeded draw of distinct retain questions, the same
  whatever the file's order, never more than asked for, none without a retain set.
* The token cache keeps tokens learned on different questions apart (the draw's digest is in the name)
  and reuses one learned on the same draw; with 0 domain questions the name is what it always was.
* On the tiny model, the stage's token is Phase I run on those questions (bit for bit) and differs from
  the token of the ordinary questions alone. (What the questions do on a fine-tuned model is measured by
  ``bench.sequential``: a tiny random model has no domain to override.)

    .venv/bin/python -m pytest tests/test_token_domain.py
"""

from __future__ import annotations

from pathlib import Path

import torch

from unierase.config import Params
from unierase.data.facts import Fact, write_facts
from unierase.stages.token import ensure_token_stage, retain_questions, token_cache_path
from unierase.token.learning import token_training_questions

RETAIN = [
    Fact(question=f"Where was Author {name} born?", answer=f"{name} was born in {city}.", subject=f"Author {name}")
    for name, city in [("Alba", "Lima"), ("Bram", "Oslo"), ("Cleo", "Kyiv"), ("Dov", "Quito"), ("Esme", "Baku")]
]


def _params(domain: int, **token) -> Params:
    fields = {"stage1_epochs": 3, "stage2_epochs": 0, "robust_epochs": 0, "num_general_questions": 2, **token}
    return Params.model_validate({"token": {**fields, "domain_questions": domain}, "edit": {"layers": [1, 2]}})


def test_the_draw_is_seeded_distinct_and_capped() -> None:
    questions = [fact.question for fact in RETAIN]
    plain = token_training_questions(_params(0), questions)
    drawn = token_training_questions(_params(3), questions)
    assert len(plain) == 2 and drawn[:2] == plain  # the ordinary questions first, as before
    assert len(drawn) == 5 and len(set(drawn[2:])) == 3 and set(drawn[2:]) <= set(questions)
    assert token_training_questions(_params(3), [*reversed(questions), questions[0]]) == drawn
    assert token_training_questions(_params(3, seed=1), questions)[2:] != drawn[2:]  # another seed, another draw
    every = token_training_questions(_params(50), questions)[2:]
    assert len(every) == 5 and set(every) == set(questions)  # all of them when fewer than asked for
    assert token_training_questions(_params(3), []) == plain


def test_cache_names_keep_the_draws_apart() -> None:
    questions = [fact.question for fact in RETAIN]
    digest = "ab" * 32
    plain = token_cache_path("/c", digest, _params(0), questions)
    assert plain == token_cache_path("/c", digest, _params(0)) and plain.name.count("-") == 1
    drawn = token_cache_path("/c", digest, _params(3), questions)
    assert drawn.name.startswith(plain.name.split("-")[0]) and drawn != token_cache_path("/c", digest, _params(3))
    assert drawn == token_cache_path("/c", digest, _params(3), list(reversed(questions)))
    assert drawn != token_cache_path("/c", digest, _params(3), questions[:4])


def test_retain_questions_reach_phase_one(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from unierase.model.loading import load_model
    from unierase.stages.artifacts import load_token
    from unierase.token.learning import learn_token

    retain = write_facts(RETAIN, tmp_path / "retain.jsonl")
    questions = retain_questions(retain)
    plain, learned = ensure_token_stage(tiny_llama_dir, _params(0), tmp_path / "c", False, retain)
    assert learned
    drawn, learned = ensure_token_stage(tiny_llama_dir, _params(5), tmp_path / "c", False, retain)
    assert learned and drawn != plain
    again, learned = ensure_token_stage(tiny_llama_dir, _params(5), tmp_path / "c", False, retain)
    assert again == drawn and not learned
    assert retain_questions(None) == []
    rows = load_token(drawn).input_rows
    assert not torch.equal(rows, load_token(plain).input_rows)
    # The stage's token is Phase I on the ordinary questions and the drawn retain ones, bit for bit.
    model, tokenizer = load_model(tiny_llama_dir)
    assert torch.equal(learn_token(model, tokenizer, _params(5), False, questions).input_rows, rows)


def test_learn_token_command_takes_the_retain_set(tiny_llama_dir: Path, tmp_path: Path) -> None:
    import yaml

    from unierase.cli import main
    from unierase.stages.artifacts import load_token

    retain = write_facts(RETAIN, tmp_path / "retain.jsonl")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params(5).model_dump(mode="json")))
    common = ["learn-token", "--model", str(tiny_llama_dir), "--params", str(params)]
    assert main([*common, "--output", str(tmp_path / "drawn.safetensors"), "--retain", str(retain)]) == 0
    assert main([*common, "--output", str(tmp_path / "plain.safetensors")]) == 0
    cached, _ = ensure_token_stage(tiny_llama_dir, _params(5), tmp_path / "c", False, retain)
    drawn, plain = load_token(tmp_path / "drawn.safetensors"), load_token(tmp_path / "plain.safetensors")
    assert torch.equal(drawn.input_rows, load_token(cached).input_rows)
    assert not torch.equal(drawn.input_rows, plain.input_rows)
