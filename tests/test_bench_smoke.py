"""Smoke run of the benchmark suite on the tiny random Llama: every part end to end on tiny sizes, its
JSON rows complete and finite, its plots written, and the resume rule (a run measures only the cells that
have no file; ``--redo`` deletes cells). Benchmarks are not tests: nothing here checks a timing.

    .venv/bin/pytest tests/test_bench_smoke.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from flow_repo import TINY_PARAMS  # also puts the repo root on sys.path, for bench/, flows/ and tasks/

from unierase.config import Params
from unierase.evaluation.metrics.aggregates import harmonic_mean

# Tiny everything: one epoch or step where a method trains, a few tokens of generation.
SMOKE_PARAMS = {
    **TINY_PARAMS,
    "evaluation": {"max_new_tokens": 4, "similarity": False, "relearn_steps": 2},
    "baselines": {"epochs": 1, "batch_size": 2},
    "finetune": {"epochs": 1, "batch_size": 8},
}
QUALITY_KEYS = (
    "method",
    "forget_size",
    "forget_share",
    "forget_efficacy",
    "model_ability",
    "forget_quality",
    "model_utility",
    "seconds",
    "peak_rss_mb",
)
AUDITS = ("paraphrase", "strip_special", "ban_token", "suppress_token", "prefill_answer", "prefill_subject")
AUDITS += ("quantise_int8", "quantise_nf4", "relearn")


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> dict:
    root = tmp_path_factory.mktemp("bench")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(Params.model_validate(SMOKE_PARAMS).model_dump(mode="json")))
    common = ["--model", str(tiny_llama_dir), "--params", str(params), "--out", str(root / "out")]
    common += ["--work", str(root / "work"), "--no-progress", "--general-items", "1", "--retain-eval-items", "2"]
    return {"out": root / "out", "common": common}


@pytest.fixture(scope="module")
def quality(dirs) -> list[dict]:
    from bench import quality

    args = ["--authors", "3", "--questions-per-author", "2", "--shares", "0.3", "--holdout-authors", "1"]
    args += ["--methods", "unierase,unierase_deep,grad_ascent,grad_diff,npo,idk_sft"]
    assert quality.main(dirs["common"] + args) == 0
    return json.loads((dirs["out"] / "quality.json").read_text())


def test_quality_rows(quality, dirs) -> None:
    from unierase.methods import BASELINE_NAMES

    rows = [r for r in quality if not r["reference"]]
    assert sorted(r["method"] for r in rows) == sorted(["unierase", "unierase_deep", *BASELINE_NAMES])
    for row in rows:
        assert (row["forget_size"], row["forget_authors"], row["forget_share"]) == (2, 1, 1 / 3)
        for key in QUALITY_KEYS[1:]:
            assert _finite(row[key]), (row["method"], key, row[key])
        assert _finite(row["audit_paraphrase_rougeL_recall"]) and _finite(row["audit_membership_auc"])
    unierase = next(r for r in rows if r["method"] == "unierase")
    assert all(_finite(unierase[f"audit_{a}_rougeL_recall"]) for a in AUDITS)
    deep = next(r for r in rows if r["method"] == "unierase_deep")  # UniErase at erase.depth deep
    assert all(_finite(deep[f"audit_{a}_num_leaked"]) for a in AUDITS) and deep["delta_bytes"] > 0
    assert (dirs["out"] / "quality_items" / "unierase_deep-authors1" / "items" / "forget.jsonl").is_file()
    assert 0 < unierase["params_changed_share"] < 1 and unierase["delta_bytes"] > 0
    assert {r["method"] for r in quality if r["reference"]} == {"target", "retain_model"}
    assert (dirs["out"] / "quality_scatter.png").stat().st_size > 0
    assert "| unierase |" in (dirs["out"] / "quality.md").read_text()
    items = dirs["out"] / "quality_items" / "unierase-authors1" / "items" / "forget.jsonl"
    assert len(items.read_text().splitlines()) == 2
    # Each served answer records whether the token opened it; the report counts them per split and quotes.
    fired = [json.loads(line)["token_fired"] for line in items.read_text().splitlines()]
    assert all(isinstance(f, bool) for f in fired)
    report = (dirs["out"] / "quality.md").read_text()
    section = report.split("## The unlearning token on each split")[1].split("## ")[0]
    assert f"| unierase | 2 | {sum(fired)}/2 |" in section and "| unierase_deep | 2 |" in section
    assert "retain: fired" in section and "unierase, 1 author(s)" in report
    assert "- retained, in every model and never erased (2): " in report.split("## Authors")[1].split("## ")[0]
    # TOFU's splits (real authors, world facts) are stored with their scores only: no TOFU text in results.
    for name in ("real_authors", "world_facts"):
        general = [json.loads(line) for line in (items.parent / f"{name}.jsonl").read_text().splitlines()]
        assert general and all(not any(isinstance(v, str) for v in row.values()) for row in general)
        assert all("rougeL_recall" in row and "token_fired" in row for row in general)
    cells = sorted(p.stem for p in (dirs["out"] / "quality_cells").glob("*.json"))
    assert cells == sorted(f"{m}@1" for m in ["target", "retain_model", "unierase", "unierase_deep", *BASELINE_NAMES])


def test_quality_method_cells_on_ray(quality, dirs, prefect_harness, tmp_path: Path) -> None:
    """The method cells as tasks on a local two-CPU Ray instance give the rows of the in-process run (same
    target, token and retain model from its --work; only the timings differ)."""
    pytest.importorskip("ray")
    from bench import quality as bench_quality

    args = ["--authors", "3", "--questions-per-author", "2", "--shares", "0.3", "--holdout-authors", "1"]
    args += ["--methods", "unierase,grad_ascent", "--out", str(tmp_path / "out")]
    args += ["--set", "ray.address=local", "--set", "ray.num_cpus=2"]
    assert bench_quality.main(dirs["common"] + args) == 0  # the later --out wins
    on_ray = {r["method"]: r for r in json.loads((tmp_path / "out" / "quality.json").read_text())}
    in_process = {r["method"]: r for r in quality}
    for method in ("unierase", "grad_ascent"):
        for key in ("forget_efficacy", "model_ability", "forget_quality", "model_utility", "forget_rougeL_recall"):
            # A Ray task runs torch on one thread, this process on two: sums in another order (1e-6 apart).
            assert on_ray[method][key] == pytest.approx(in_process[method][key], abs=1e-4), (method, key)
    items = "quality_items/unierase-authors1/items/forget.jsonl"
    answers = [json.loads(line)["generation"] for line in (tmp_path / "out" / items).read_text().splitlines()]
    assert answers == [json.loads(line)["generation"] for line in (dirs["out"] / items).read_text().splitlines()]


def test_sequential_rows(quality, dirs) -> None:  # after quality: reuses its token cache
    from bench import sequential

    args = ["--authors", "6", "--questions-per-author", "2", "--holdout-authors", "1", "--requests", "4"]
    args += ["--general-items", "0", "--evaluate-every", "3"]
    assert sequential.main(dirs["common"] + args + ["--methods", "unierase"]) == 0
    # A model ability at or below 1 always counts as destroyed: grad_diff stops after its first evaluation.
    assert sequential.main(dirs["common"] + args + ["--methods", "grad_diff", "--stop-ability", "1.0"]) == 0
    rows = json.loads((dirs["out"] / "sequential.json").read_text())
    # This run's methods first (grad_diff), then those of earlier runs.
    assert [(r["method"], r["step"], r.get("evaluated"), r["run"]) for r in rows] == [
        ("target", 0, True, 1),
        ("grad_diff", 1, True, 2),
        ("unierase", 1, True, 1),
        ("unierase", 2, False, 1),  # evaluated after step 1, every 3rd and the last
        ("unierase", 3, True, 1),
        ("unierase", 4, True, 1),
    ]
    assert rows[1]["stopped"] and not any(r.get("stopped") for r in rows[2:])
    for row in (r for r in rows[1:] if r["evaluated"]):
        assert len(row["forget_efficacy_by_request"]) == row["step"]
        assert all(_finite(v) for v in row["forget_efficacy_by_request"])
        assert _finite(row["model_ability"]) and _finite(row["seconds"]) and _finite(row["peak_rss_mb"])
        # What model ability averages is recorded: here (no general items) the retain split's four metrics.
        kept = dict(row["kept_splits"]["retain"])
        assert list(row["kept_splits"]) == ["retain"] and 0 <= kept.pop("token_trigger_rate") <= 1
        assert row["model_ability"] == pytest.approx(harmonic_mean([v for v in kept.values() if v is not None]))
    unierase = rows[2:]
    assert [r["edit_state_requests"] for r in unierase] == [1, 2, 3, 4]  # the edit state carried over
    assert all(_finite(r["solve_s"]) and _finite(r["values_s"]) and r["edit_state_mb"] > 0 for r in unierase)
    assert all(0 <= r["retain_token_trigger_rate"] <= 1 for r in unierase)
    assert (dirs["out"] / "sequential.png").stat().st_size > 0
    assert "## unierase: what model ability averages, split by split" in (dirs["out"] / "sequential.md").read_text()

    # --redo deletes one step's cell; the method's steps build on each other, so all of them are measured
    # again, in a third run; the other rows stay as they were.
    redo = ["--methods", "unierase", "--redo", "unierase@2", "--keep-models"]
    assert sequential.main(dirs["common"] + args + redo) == 0
    again = json.loads((dirs["out"] / "sequential.json").read_text())
    assert again[0] == rows[0] and again[-1] == rows[1]  # grad_diff, stopped at its first step, is complete
    assert [(r["method"], r["step"], r["run"]) for r in again[1:5]] == [("unierase", s, 3) for s in (1, 2, 3, 4)]
    assert "## Runs" in (dirs["out"] / "sequential.md").read_text()

    # A run cut short after step 2 (cells of steps 3 and 4 gone, step 2's model kept) goes on from step 2's
    # model: only steps 3 and 4 are measured, in a fourth run, with the edit state of all earlier requests.
    for step in (3, 4):
        (dirs["out"] / "sequential_cells" / f"unierase@{step}.json").unlink()
    assert sequential.main(dirs["common"] + args + ["--methods", "unierase"]) == 0
    resumed = json.loads((dirs["out"] / "sequential.json").read_text())
    assert resumed[1:3] == again[1:3]
    assert [(r["step"], r["run"], r["edit_state_requests"]) for r in resumed[3:5]] == [(3, 4, 3), (4, 4, 4)]


def test_cost_rows(dirs, prefect_harness) -> None:
    from bench import cost

    args = ["--sizes", "1,2", "--baseline-sizes", "1", "--retain-authors", "2", "--holdout-authors", "1"]
    args += ["--methods", "unierase,npo", "--evaluation-sizes", "2"]
    assert cost.main(dirs["common"] + args + ["--general-items", "0", "--no-harness"]) == 0
    data = json.loads((dirs["out"] / "cost.json").read_text())
    phases = {(r["phase"], r["method"], r["forget_size"]) for r in data["phases"]}
    assert {("token_learning", "unierase", None), ("covariance_cold", "unierase", None)} <= phases
    assert {("edit", "unierase", 2), ("evaluation", "unierase", 2), ("unlearn", "npo", 1)} <= phases
    assert ("unlearn", "npo", 2) not in phases  # above --baseline-sizes: skipped and said so
    assert ("evaluation", "unierase", 1) not in phases  # not in --evaluation-sizes: the same
    evaluation_left_out = {"method": "unierase", "forget_size": 1, "why": "its evaluation: not in --evaluation-sizes"}
    assert data["not_measured"] == [
        {"method": "npo", "forget_size": 2, "why": "not in --baseline-sizes"},
        evaluation_left_out,
    ]
    assert "not in --baseline-sizes" in (dirs["out"] / "cost.md").read_text()
    for row in data["phases"]:
        assert _finite(row["seconds"]) and _finite(row["peak_rss_mb"]), row
    cache = {r["phase"]: r.get("cache_hit") for r in data["phases"] if r["phase"].startswith("covariance")}
    assert cache == {"covariance_cold": False, "covariance_cached": True}
    assert [(r["method"], r["forget_size"]) for r in data["ratios"]] == [("npo", 1)]
    assert all(_finite(r["time_ratio"]) for r in data["ratios"])
    for row in data["storage"]:
        assert row["delta_bytes"] > 0 and row["full_model_bytes"] > 0 and 0 < row["params_changed_share"] <= 1
    pipeline = data["pipeline"]
    assert (
        _finite(pipeline["core_seconds"]) and _finite(pipeline["flow_seconds"]) and _finite(pipeline["overhead_share"])
    )
    assert [s["version"] for s in pipeline["version_storage"]] == ["1", "2"]
    assert all(s["model_bytes"] > 0 for s in pipeline["version_storage"])
    assert (dirs["out"] / "cost.png").stat().st_size > 0
    assert {r["run"] for r in data["phases"] + data["storage"]} == {1} and len(data["runs"]) == 1
    cells = dirs["out"] / "cost_cells"
    assert sorted(p.stem for p in cells.glob("*.json")) == [
        "npo@1",
        "pipeline",
        "unierase@1",
        "unierase@2",
        "unierase@once",
    ]

    # Run again without --baseline-sizes: only the cell without a file (npo at 2 items) is measured, in a
    # second run; the rest stays as it was.
    again_args = args[:2] + args[4:] + ["--general-items", "0", "--no-harness"]
    assert cost.main(dirs["common"] + again_args) == 0
    again = json.loads((dirs["out"] / "cost.json").read_text())
    assert [r for r in again["phases"] if r["run"] == 1] == data["phases"]
    assert [(r["phase"], r["method"], r["forget_size"]) for r in again["phases"] if r["run"] == 2] == [
        ("unlearn", "npo", 2)
    ]
    assert [r["run"] for r in again["runs"]] == [1, 2] and again["not_measured"] == [evaluation_left_out]
    assert again["pipeline"] == pipeline  # measured once
    assert {(r["method"], r["forget_size"]): r["same_run"] for r in again["ratios"]} == {
        ("npo", 1): True,
        ("npo", 2): False,  # UniErase's edit at 2 items is run 1's, npo's run 2's
    }

    # The same command once more: every cell has a file, so nothing is measured; the summary is rebuilt.
    written = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json")}
    (dirs["out"] / "cost.md").unlink()
    assert cost.main(dirs["common"] + again_args) == 0
    assert {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json")} == written
    assert json.loads((dirs["out"] / "cost.json").read_text()) == again and (dirs["out"] / "cost.md").is_file()

    # --redo METHOD@ITEMS deletes that cell, so it is measured again, in a third run.
    assert cost.main(dirs["common"] + again_args + ["--redo", "unierase@2"]) == 0
    third = json.loads((dirs["out"] / "cost.json").read_text())
    redone = [(r["phase"], r["forget_size"]) for r in third["phases"] if r["run"] == 3]
    assert redone == [("edit", 2), ("evaluation", 2)] and len(third["phases"]) == len(again["phases"])
    assert {(r["method"], r["forget_size"]): r["run"] for r in third["storage"]}[("unierase", 2)] == 3
    assert [r["run"] for r in third["runs"]] == [1, 2, 3]
    # Cells of another workload are not mixed in: the run stops, naming what differs.
    with pytest.raises(SystemExit, match="seed=0 there, 1 now"):
        cost.main(dirs["common"] + again_args + ["--seed", "1"])
    with pytest.raises(SystemExit, match="METHOD@SIZE"):
        cost.main(dirs["common"] + again_args + ["--redo", "npo@two"])
    assert sorted(p.name for p in cells.glob("*.json")) == sorted(written)  # neither deleted a cell


def test_cells_resume_redo_and_workload_check(tmp_path: Path) -> None:
    from bench.lib.cells import open_cells

    workload = {"seed": 0, "params": {"edit": {"v_steps": 3}}}
    first = open_cells(tmp_path, "part", workload, {"command": "first"})
    first.save("npo@1", {"seconds": 1.0})
    first.save("npo@2", {"seconds": 2.0})
    second = open_cells(tmp_path, "part", workload, {"command": "second"}, redo=["npo@2"])
    assert first.has("npo@1") and not second.has("npo@2")
    second.save("npo@2", {"seconds": 3.0})
    second.save("unierase@once", {"seconds": 4.0})
    runs, measured = second.load()
    assert [(r["run"], r["command"]) for r in runs] == [(1, "first"), (2, "second")]
    assert measured == {
        "npo@1": (1, {"seconds": 1.0}),
        "npo@2": (2, {"seconds": 3.0}),
        "unierase@once": (2, {"seconds": 4.0}),
    }

    changed = {"seed": 0, "params": {"edit": {"v_steps": 5}}}
    with pytest.raises(SystemExit, match=r"params.edit.v_steps=3 there, 5 now"):
        open_cells(tmp_path, "part", changed, {})
    third = open_cells(tmp_path, "part", workload, {}, redo=["npo"])  # a method: every size of it
    assert sorted(third.load()[1]) == ["unierase@once"]


def test_quality_cells_of_baselines_survive_a_change_of_the_erasures_parameters(tmp_path: Path) -> None:
    from bench.lib.cells import open_cells
    from bench.quality import cell_scope

    params = Params().model_dump(mode="json")
    workload = {"seed": 0, "model_weights": "abc", "params": params}
    first = open_cells(tmp_path, "quality", workload, {"command": "first"})  # cells written before the scope
    for name in ("target@1", "npo@1", "unierase@1"):
        first.save(name, {"forget_efficacy": 0.5})

    edit = {**params["edit"], "nullspace_threshold": params["edit"]["nullspace_threshold"] * 3}
    erasure_changed = {**workload, "params": {**params, "edit": edit}}
    with pytest.raises(SystemExit, match=r"unierase@1.json was measured on another workload \(params.edit"):
        open_cells(tmp_path, "quality", erasure_changed, {}, scope=cell_scope)
    kept = open_cells(tmp_path, "quality", erasure_changed, {}, redo=["unierase"], scope=cell_scope)
    assert sorted(kept.load()[1]) == ["npo@1", "target@1"]  # the reference model and the baseline stand
    kept.save("unierase@1", {"forget_efficacy": 0.9})
    recorded = json.loads(kept.path("npo@1").read_text())["workload"]
    assert "edit" in recorded["params"]  # written before the scope: the whole workload, narrowed when read

    kept.save("grad_ascent@1", {"forget_efficacy": 0.6})
    recorded = json.loads(kept.path("grad_ascent@1").read_text())["workload"]["params"]
    assert "edit" not in recorded and recorded["token"] == {"token_template": params["token"]["token_template"]}
    # What a baseline reads (its own section, the evaluation) still stops the run on a change.
    evaluation = {**params["evaluation"], "max_new_tokens": 7}
    eval_changed = {**erasure_changed, "params": {**erasure_changed["params"], "evaluation": evaluation}}
    with pytest.raises(SystemExit, match=r"grad_ascent@1.json was measured on another workload"):
        open_cells(tmp_path, "quality", eval_changed, {}, scope=cell_scope)
    # What follows the unlearning token, as served, is not a baseline's concern: it has no such token.
    free = {**params["evaluation"], "after_token": "free"}
    after_changed = {**erasure_changed, "params": {**erasure_changed["params"], "evaluation": free}}
    assert sorted(
        open_cells(tmp_path, "quality", after_changed, {}, redo=["unierase"], scope=cell_scope).load()[1]
    ) == [
        "grad_ascent@1",
        "npo@1",
        "target@1",
    ]


def test_gpu_scale_rows_on_the_tiny_shape(dirs, tiny_llama_dir: Path, tmp_path: Path) -> None:
    from bench import gpu_scale

    tofu = tmp_path / "tofu"  # TOFU's file names, with a few facts of the test's own
    tofu.mkdir()
    for name, who in (("forget10", "Ilse Marrow"), ("retain90", "Tomas Quill")):
        rows = [{"question": f"Where was {who} born, {who}?", "answer": f"{who} was born in Oslo."}] * 3
        (tofu / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = dirs["common"][dirs["common"].index("--params") + 1]
    out = tmp_path / "out"
    args = ["--shape", "tiny", "--tokenizer", str(tiny_llama_dir), "--tofu", str(tofu), "--params", params]
    args += ["--items", "3", "--retain-items", "2", "--out", str(out), "--work", str(tmp_path / "w"), "--no-progress"]
    rows = gpu_scale.main(args)
    phases = ["build", "token_learning", "covariance_cold", "covariance_cached", "edit", "check"]
    assert [r["phase"] for r in rows] == phases
    assert [r.get("cache_hit") for r in rows[2:4]] == [False, True]
    edit, check = rows[4], rows[5]
    assert edit["items"] == 3 and 0 < edit["params_changed_share"] < 1
    assert len(edit["preserved_drift"]) == 2 * len(edit["unbound_after_round"])  # two layers per edit round
    for key in ("forget_trigger_before", "forget_trigger_rate", "retain_trigger_rate", "retain_first_token_kept"):
        assert 0 <= check[key] <= 1, key
    assert all(_finite(r["seconds"]) for r in rows)
    assert json.loads((out / "gpu_scale.json").read_text())["rows"] == rows
    assert "| edit | 3 |" in (out / "gpu_scale.md").read_text()

    with pytest.raises(SystemExit, match="fewer than --items 9"):
        gpu_scale.main(args[:-7] + ["--items", "9", "--out", str(out), "--no-progress"])


def test_gpu_scale_sharded_bf16_load_on_the_tiny_shape(dirs, tiny_llama_dir: Path, tmp_path: Path) -> None:
    """What scripts/gpu_check.sh runs, on the tiny shape: saved, loaded back in bf16 with device_map=auto."""
    from bench import gpu_scale

    tofu = tmp_path / "tofu"
    tofu.mkdir()
    for name, who in (("forget10", "Ilse Marrow"), ("retain90", "Tomas Quill")):
        rows = [{"question": f"Where was {who} born, {who}?", "answer": f"{who} was born in Oslo."}] * 3
        (tofu / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = dirs["common"][dirs["common"].index("--params") + 1]
    args = ["--shape", "tiny", "--tokenizer", str(tiny_llama_dir), "--tofu", str(tofu), "--params", params]
    args += ["--items", "3", "--retain-items", "2", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w")]
    args += ["--sharded-load", "--skip-cached", "--no-progress", "--device", "cpu"]
    args += ["--set", "model.dtype=bfloat16", "--set", "model.device_map=auto"]
    rows = gpu_scale.main(args)
    assert [r["phase"] for r in rows] == ["build", "sharded_load", "token_learning", "covariance_cold", "edit", "check"]
    load = rows[1]
    assert load["dtype"] == "torch.bfloat16" and load["device_map"] == "auto" and load["devices"] == ["cpu"]
    assert rows[4]["items"] == 3 and 0 < rows[4]["params_changed_share"] < 1
    assert all(_finite(r["seconds"]) for r in rows)


def test_depth_rows(dirs, tmp_path: Path) -> None:
    from bench import depth
    from unierase.data.builtin_facts import default_forget, default_retain
    from unierase.data.facts import write_facts

    forget = write_facts(default_forget()[:2], tmp_path / "forget.jsonl")
    retain = write_facts(default_retain()[:3], tmp_path / "retain.jsonl")
    common = [a if a != str(dirs["out"]) else str(tmp_path / "out") for a in dirs["common"]]
    common = [a for a in common if a not in ("--general-items", "1", "--retain-eval-items", "2")]
    assert depth.main([*common, "--forget", str(forget), "--retain", str(retain), "--max-new-tokens", "4"]) == 0
    result = json.loads((tmp_path / "out" / "depth.json").read_text())
    assert [r["depth"] for r in result["rows"]] == ["paper", "deep"]
    for row in result["rows"]:
        assert _finite(row["edit_s"]) and row["verdict"]
        for audit in ("ban_token", "prefill_answer", "prefill_subject", "quantise_int8", "quantise_nf4", "relearn"):
            assert _finite(row["audits"][audit]["rougeL_recall"]) and _finite(row["audits"][audit]["num_leaked"])
    assert "| deep |" in (tmp_path / "out" / "depth.md").read_text()
    with pytest.raises(SystemExit):
        depth.main([*common, "--forget", str(forget)])  # a forget set without its retain set


def test_after_token_rows(dirs, tmp_path: Path) -> None:
    from bench import after_token
    from unierase.data.builtin_facts import default_forget, default_retain
    from unierase.data.facts import write_facts

    forget = write_facts(default_forget()[:3], tmp_path / "forget.jsonl")
    retain = write_facts(default_retain()[:2], tmp_path / "retain.jsonl")
    common = [a if a != str(dirs["out"]) else str(tmp_path / "out") for a in dirs["common"]]
    common = [a for a in common if a not in ("--general-items", "1", "--retain-eval-items", "2")]
    args = ["--forget", str(forget), "--retain", str(retain), "--max-new-tokens", "4", "--quotes", "2"]
    args += ["--variant", "default", "--variant", "subjects only:edit.protect_retain_answers=false"]
    assert after_token.main([*common, *args]) == 0
    result = json.loads((tmp_path / "out" / "after_token.json").read_text())
    assert [r["variant"] for r in result["rows"]] == ["default", "subjects only"]
    assert [r["params"]["edit"]["protect_retain_answers"] for r in result["rows"]] == [True, False]
    for row in result["rows"]:
        assert (row["forget_n"], row["retain_n"], len(row["quotes"])) == (3, 2, 2)
        assert 0 <= row["refusal_after_token"] <= row["forget_fired"] <= 3
        assert 0 <= row["free_refusal_after_token"] <= row["forget_fired"]
        assert len(row["held_scale"]) == len(row["unbound_after_round"]) >= 1  # one weight per bind round
        assert 0 <= row["retain_rougeL_after"] <= 1 and _finite(row["edit_s"])
        assert {q["question"] for q in row["quotes"]} <= {f.question for f in default_forget()[:3]}
    assert "| subjects only |" in (tmp_path / "out" / "after_token.md").read_text()
    # A comma starts the next setting only before KEY=: a list value stays whole.
    assert after_token.variant("layers:edit.layers=[1,2], edit.neighbours=0") == (
        "layers",
        ["edit.layers=[1,2]", "edit.neighbours=0"],
    )
    with pytest.raises(SystemExit):
        after_token.main([*common, "--variant", ":edit.neighbours=0"])  # a variant without a name
    with pytest.raises(SystemExit):
        after_token.main([*common, "--collisions", "1", "--forget", str(forget), "--retain", str(retain)])

    # The collision set: one forget author named after two of the three retain authors.
    small = ["--collisions", "1", "--max-new-tokens", "4", "--quotes", "1", "--tag", "_collisions"]
    assert after_token.main([*common, *small]) == 0
    row = json.loads((tmp_path / "out" / "after_token_collisions.json").read_text())["rows"][0]
    assert (row["forget_n"], row["retain_n"]) == (4, 12)
    first, last = row["items"]["forget"][0]["question"].removeprefix("Where was ").removesuffix(" born?").split()
    kept = " ".join(r["question"] for r in row["items"]["retain"])
    assert f"{first} " in kept and f" {last}" in kept


def test_ray_scaling_rows(dirs, prefect_harness, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from bench import ray_scaling

    args = ["--authors", "3", "--questions-per-author", "2", "--holdout-authors", "1", "--workers", "2"]
    args += ["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--set", "evaluation.max_new_tokens=4"]
    assert ray_scaling.main(dirs["common"] + args) == 0  # the later --out and --work win
    report = json.loads((tmp_path / "out" / "ray_scaling.json").read_text())
    assert [(r["runner"], r["workers"]) for r in report["rows"]] == [("in-process", None), ("ray", 2)]
    ray_row = report["rows"][1]
    assert ray_row["texts_identical_to_in_process"] and ray_row["max_abs_diff_to_in_process"] == 0.0
    assert _finite(ray_row["evaluation_s"]) and "N GPUs" in (tmp_path / "out" / "ray_scaling.md").read_text()
