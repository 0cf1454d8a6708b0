"""Fine-tuning: the loss falls and the model learns its answers; the file-level front door and the
CLI write a loadable model with provenance.

    .venv/bin/pytest tests/test_finetune.py -q
"""

from __future__ import annotations

import argparse
import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from unierase.config import FinetuneConfig
from unierase.data.authors import generate_author_benchmark, write_author_benchmark
from unierase.evaluation.metrics.probability import answer_token_nlls
from unierase.model.finetune import finetune_model
from unierase.model.qa_loss import encode_example


@pytest.fixture(scope="module")
def facts():
    return generate_author_benchmark(num_authors=2, questions_per_author=2, num_forget=1, num_holdout=1, seed=0)["full"]


def test_example_labels_cover_answer_and_end_token_only(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    ids, labels = encode_example(tokenizer, "Who?", "Me.")
    answer = tokenizer("Me.", add_special_tokens=False)["input_ids"]
    assert labels[-len(answer) - 1 :] == answer + [tokenizer.eos_token_id]
    assert all(v == -100 for v in labels[: -len(answer) - 1])
    assert ids[-len(answer) - 1 :] == labels[-len(answer) - 1 :]


def test_finetuning_learns_the_answers(tiny_llama_dir, facts):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    questions, answers = [f.question for f in facts], [f.answer for f in facts]
    before = answer_token_nlls(model, tokenizer, questions, answers, progress=False)
    result = finetune_model(model, tokenizer, facts, FinetuneConfig(lr=1e-2, epochs=6, batch_size=2), progress=False)
    after = answer_token_nlls(model, tokenizer, questions, answers, progress=False)
    assert len(result.epoch_losses) == 6 and len(result.losses) == 12
    assert result.epoch_losses[-1] < 0.8 * result.epoch_losses[0]
    mean = lambda xs: sum(sum(x) / len(x) for x in xs) / len(xs)  # noqa: E731
    assert mean(after) < mean(before) - 2.0
    assert not model.training


def test_cli_writes_target_and_retain_models(tiny_llama_dir, tmp_path, monkeypatch):
    from unierase.cli import finetune as cli

    splits = generate_author_benchmark(num_authors=2, questions_per_author=2, num_forget=1, num_holdout=1, seed=0)
    paths = write_author_benchmark(splits, tmp_path / "data")
    params = tmp_path / "params.yaml"
    params.write_text("finetune:\n  epochs: 1\n  lr: 1.0e-3\n")
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "finetune",
            "--data",
            str(paths["full"]),
            "--model",
            str(tiny_llama_dir),
            "--output",
            str(tmp_path / "target"),
            "--retain-data",
            str(paths["retain"]),
            "--retain-output",
            str(tmp_path / "retain"),
            "--params",
            str(params),
            "--device",
            "cpu",
        ]
    )
    assert args.func(args) == 0
    for name, rows in (("target", 4), ("retain", 2)):
        record = json.loads((tmp_path / name / "finetune.json").read_text())
        assert record["num_facts"] == rows and record["config"]["epochs"] == 1 and len(record["data_sha256"]) == 64
        AutoModelForCausalLM.from_pretrained(tmp_path / name)
    bad = parser.parse_args(
        ["finetune", "--data", "x.jsonl", "--model", "m", "--output", "o", "--retain-data", "r.jsonl"]
    )
    with pytest.raises(ValueError, match="go together"):
        bad.func(bad)
