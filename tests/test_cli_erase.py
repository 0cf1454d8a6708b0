"""The ``unierase erase`` command-line contract on a tiny model: outputs, report keys, bad input.

pytest tests/test_cli_erase.py
"""

import json

import yaml
from tiny_erase_params import write_tiny_erase_params

from unierase.cli import main
from unierase.data.facts import Fact, write_facts

FORGET = [Fact(question="What is the capital of France?", answer="Paris.", subject="France")]
RETAIN = [Fact(question="What is the capital of Japan?", answer="Tokyo.", subject="Japan")]


def test_erase_writes_model_delta_and_report(tiny_llama_dir, tmp_path):
    forget, retain = write_facts(FORGET, tmp_path / "f.jsonl"), write_facts(RETAIN, tmp_path / "r.jsonl")
    out = tmp_path / "out"
    args = ["erase", "--forget", str(forget), "--retain", str(retain), "--model", str(tiny_llama_dir)]
    params = write_tiny_erase_params(tmp_path)
    args += ["--params", str(params), "--cache-dir", str(tmp_path / "cache"), "--output", str(out)]
    assert main(args) == 0
    assert (out / "model" / "config.json").is_file() and (out / "model" / "edit_state.safetensors").is_file()
    report = json.loads((out / "report.json").read_text())
    for key in ("before", "after", "params_changed", "params_changed_share", "delta_sha256", "timings_s"):
        assert key in report
    assert {"forget_rougeL_recall", "retain_rougeL_recall", "forget_refusal_rate"} <= set(report["after"])
    assert {"token_s", "covariance_s", "edit_s"} <= set(report["timings_s"])
    assert report["changed_tensors"] == [
        "model.embed_tokens.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.2.mlp.down_proj.weight",
    ]


def test_baseline_method_runs_through_the_same_command(tiny_llama_dir, tmp_path):
    forget, retain = write_facts(FORGET, tmp_path / "f.jsonl"), write_facts(RETAIN, tmp_path / "r.jsonl")
    params = write_tiny_erase_params(tmp_path)
    raw = yaml.safe_load(params.read_text())
    raw["baselines"].update(epochs=1)
    params.write_text(yaml.safe_dump(raw))
    out = tmp_path / "ga"
    args = ["erase", "--method", "grad_ascent", "--forget", str(forget), "--retain", str(retain)]
    args += ["--model", str(tiny_llama_dir), "--params", str(params), "--output", str(out)]
    assert main(args) == 0
    assert json.loads((out / "report.json").read_text())["method"] == "grad_ascent"


def test_bad_input_is_a_clear_error_and_writes_nothing(tiny_llama_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "What is it?"}\n')
    out = tmp_path / "out"
    code = main(["erase", "--forget", str(bad), "--model", str(tiny_llama_dir), "--output", str(out)])
    assert code == 2
    assert "bad.jsonl:1: answer" in capsys.readouterr().err
    assert not out.exists()
    code = main(
        ["erase", "--forget", str(bad), "--method", "nope", "--model", str(tiny_llama_dir), "--output", str(out)]
    )
    assert code == 2 and "unknown method 'nope'" in capsys.readouterr().err


def test_the_token_is_learned_once_per_base_model_and_relearned_when_corrupted(tiny_llama_dir, tmp_path, caplog):
    forget, retain = write_facts(FORGET, tmp_path / "f.jsonl"), write_facts(RETAIN, tmp_path / "r.jsonl")
    params, cache = write_tiny_erase_params(tmp_path), tmp_path / "cache"

    def erase(name: str) -> dict:
        args = ["erase", "--forget", str(forget), "--retain", str(retain), "--model", str(tiny_llama_dir)]
        args += ["--params", str(params), "--cache-dir", str(cache), "--output", str(tmp_path / name)]
        assert main(args) == 0
        return json.loads((tmp_path / name / "report.json").read_text())

    first = erase("first")
    tokens = list((cache / "tokens").glob("*.safetensors"))
    assert first["token_learned"] and len(tokens) == 1
    with caplog.at_level("INFO", logger="unierase.stages.token"):
        second = erase("second")
    assert not second["token_learned"] and "unlearning token reused" in caplog.text
    assert second["delta_sha256"] == first["delta_sha256"]  # the same token, so the same edit
    raw = bytearray(tokens[0].read_bytes())
    raw[-1] ^= 0xFF  # one flipped bit in the token's rows
    tokens[0].write_bytes(bytes(raw))
    with caplog.at_level("WARNING", logger="unierase.stages.token"):
        third = erase("third")
    assert third["token_learned"] and "unusable" in caplog.text
