"""Fine-tuning: the loss falls and the model learns its answers; the file-level front door and the
CLI write a loadable model with provenance.

    .venv/bin/pytest tests/test_finetune.py -q
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch
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


class _Killed(Exception):
    """Stands for the process dying between two epochs."""


def _stop_after(epochs: int):
    def after_epoch(done: int) -> None:
        if done == epochs:
            raise _Killed

    return after_epoch


def test_a_killed_fine_tune_resumes_from_its_last_epoch_to_the_same_model(tiny_llama_dir, facts, tmp_path):
    """A run stopped after its first epoch and started again from its checkpoint ends with the same
    weights and losses as one that ran through; a checkpoint of other inputs is trained over."""
    from unierase.model.finetune import Checkpoint

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    config = FinetuneConfig(lr=1e-2, epochs=3, batch_size=2)
    through = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    whole = finetune_model(through, tokenizer, facts, config, progress=False)

    checkpoint = Checkpoint(tmp_path / "ckpt.pt", "run-a", every_s=0)
    first = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    with pytest.raises(_Killed):
        finetune_model(first, tokenizer, facts, config, False, checkpoint, after_epoch=_stop_after(1))
    assert checkpoint.path.is_file() and not list(tmp_path.glob("*.tmp"))
    again = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)  # a new process: the base weights again
    resumed = finetune_model(again, tokenizer, facts, config, False, checkpoint)
    assert resumed.resumed_epochs == 1
    assert resumed.losses == pytest.approx(whole.losses, abs=1e-6)
    for (name, a), b in zip(through.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name

    other = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    fresh = finetune_model(other, tokenizer, facts, config, False, Checkpoint(checkpoint.path, "run-b", every_s=0))
    assert fresh.resumed_epochs == 0 and fresh.losses == pytest.approx(whole.losses, abs=1e-6)


def test_epochs_shorter_than_the_checkpoint_interval_write_no_checkpoint(tiny_llama_dir, facts, tmp_path):
    """The state is written only once ``every_s`` has passed: a run of short epochs killed after its
    second leaves nothing to resume (it would have cost more to write than to train again)."""
    from unierase.model.finetune import Checkpoint

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    checkpoint = Checkpoint(tmp_path / "ckpt.pt", "run-a", every_s=3600)
    config = FinetuneConfig(lr=1e-2, epochs=3, batch_size=2)
    with pytest.raises(_Killed):
        finetune_model(model, tokenizer, facts, config, False, checkpoint, after_epoch=_stop_after(2))
    assert not list(tmp_path.iterdir())


def test_the_stage_resumes_and_leaves_no_checkpoint_behind(tiny_llama_dir, tmp_path, monkeypatch):
    """`finetune_stage` keeps each epoch's state under the output folder while it runs; run again after a
    kill, it resumes, records so, and removes the checkpoint once the model is saved."""
    import unierase.stages.finetune as stage

    splits = generate_author_benchmark(num_authors=2, questions_per_author=2, num_forget=1, num_holdout=1, seed=0)
    data = write_author_benchmark(splits, tmp_path / "data")["full"]
    config, out = FinetuneConfig(lr=1e-3, epochs=2, batch_size=2), tmp_path / "target"
    real = stage.finetune_model
    killed = lambda *a, **k: real(*a, **k, after_epoch=_stop_after(1))  # noqa: E731
    monkeypatch.setattr(stage, "finetune_model", killed)
    with pytest.raises(_Killed):
        stage.finetune_stage(tiny_llama_dir, data, out, config, device="cpu", progress=False, checkpoint_every_s=0)
    assert (out / stage.CHECKPOINT_NAME).is_file() and not (out / "finetune.json").exists()
    monkeypatch.setattr(stage, "finetune_model", real)
    stage.finetune_stage(tiny_llama_dir, data, out, config, device="cpu", progress=False)
    record = json.loads((out / "finetune.json").read_text())
    assert record["resumed_after_epochs"] == 1 and len(record["epoch_losses"]) == 2
    assert not (out / stage.CHECKPOINT_NAME).exists()
