"""The parallel parts on a local Ray cluster of two worker processes give the in-process results: the
evaluation (sharded by split and item chunk, one model copy per task, rows merged in item order) and
the preserved-key statistics (map-reduce of float64 sums of key outer products and token counts).

    .venv/bin/python -m pytest tests/test_ray.py -q

Both run as the Prefect subflows of ``flows/parallel.py`` under prefect-ray's task runner, on a tiny
random Llama that carries an unlearning token (so every leak audit runs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from flow_repo import TINY_PARAMS  # noqa: F401  (puts the repo root on sys.path for flows/ and tasks/)
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from unierase.config import Params
from unierase.data.authors import generate_author_benchmark, write_author_benchmark
from unierase.model.loading import load_model
from unierase.parallel.shards import ItemShard, merge_item_shards, plan_item_shards, plan_ranges
from unierase.stages.evaluate import evaluate_stage
from unierase.stages.statistics import cached_preserved_moments

ray = pytest.importorskip("ray")

# Statistics: the map-reduce adds the same float64 terms in another grouping, then both are rounded to
# float32; the test allows 1e-6 of the largest entry (float32 resolution is 6e-8 of it).
STATISTICS_RTOL = 1e-6


def _params(tmp_path: Path) -> Params:
    corpus = tmp_path / "general.txt"
    corpus.write_text("\n".join(f"Topic {i} is a common subject of everyday conversation." for i in range(20)))
    return Params.model_validate(
        {
            "covariance": {"corpus": str(corpus), "num_samples": 20, "max_length": 32, "batch_size": 4},
            "edit": {"layers": [1, 2]},
            "evaluation": {
                "max_new_tokens": 8,
                "similarity": False,
                "generation_batch_size": 4,
                "batch_size": 4,
            },
            "ray": {"address": "local", "num_cpus": 2, "eval_chunk_size": 4, "statistics_shards": 2},
        }
    )


@pytest.fixture(scope="module")
def model_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with an unlearning token it likes, so generations use it and its audits run."""
    out = tmp_path_factory.mktemp("tiny-with-token")
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<unlearn_0>"]})
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    model.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        model.lm_head.weight[-1] = model.lm_head.weight[:-1].mean(0) + 0.2
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance of two CPUs: two worker processes run the shard tasks side by side."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert ray.cluster_resources()["CPU"] == 2
        yield
    finally:
        ray.shutdown()


def test_shard_plans_cover_every_item_once() -> None:
    shards = plan_item_shards({"forget": 5, "retain": 3}, 2)
    assert [(s.split, s.start, s.stop) for s in shards] == [
        ("forget", 0, 2), ("forget", 2, 4), ("forget", 4, 5), ("retain", 0, 2), ("retain", 2, 3)
    ]  # fmt: skip
    rows = [[{"i": (s.split, i)} for i in range(s.start, s.stop)] for s in shards]
    # Merged in item order whatever order the shards come back in.
    merged = merge_item_shards({"forget": 5, "retain": 3}, shards[::-1], rows[::-1])
    assert [r["i"][1] for r in merged["forget"]] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="missing or doubled"):
        merge_item_shards({"forget": 5, "retain": 3}, shards[1:], rows[1:])
    with pytest.raises(ValueError, match="returned 1 rows"):
        merge_item_shards({"forget": 2}, [ItemShard("forget", 0, 2)], [[{}]])
    assert plan_ranges(33, 2, 16) == [(0, 32), (32, 33)]
    assert plan_ranges(10, 4, 2) == [(0, 4), (4, 8), (8, 10)]
    assert plan_ranges(0, 3, 4) == []


def test_ray_evaluation_and_statistics_match_in_process(
    model_dir: Path, tmp_path: Path, prefect_harness, ray_cluster
) -> None:
    from flows.parallel import run_preserved_statistics, run_sharded_evaluation

    params = _params(tmp_path)
    bench = generate_author_benchmark(num_authors=6, questions_per_author=3, num_forget=2, num_holdout=1, seed=0)
    data = tmp_path / "data"
    write_author_benchmark({k: bench[k] for k in ("forget", "retain", "holdout")}, data)

    # Evaluation: 6 forget, 12 retain, 3 holdout items in chunks of 4 -> 2 + 3 + 1 shards on two workers.
    local = evaluate_stage(model_dir, data, tmp_path / "local", params, device="cpu", progress=False)
    remote = run_sharded_evaluation(model_dir, data, tmp_path / "ray", params)
    for name in ("forget", "retain", "holdout"):
        ours = (tmp_path / "ray" / "items" / f"{name}.jsonl").read_text().splitlines()
        theirs = (tmp_path / "local" / "items" / f"{name}.jsonl").read_text().splitlines()
        assert ours == theirs, f"per-item rows of {name} differ"  # identical, every generation and figure
    a, b = json.loads(local.read_text()), json.loads(remote.read_text())
    assert a == b  # summaries, audits and aggregates recomputed from the merged rows: the same report
    assert "ban_token" in a["audits"]["forget"] and a["audits"]["forget"]["strip_special"]["unlearn_token_rate"] > 0
    assert not (tmp_path / "ray" / "shards").exists()

    # Statistics: 2 corpus shards, summed exactly, against the in-process pass.
    model, tokenizer = load_model(model_dir, "cpu")
    preserved, heldout, info = cached_preserved_moments(model, tokenizer, params, tmp_path / "cache-local", False)
    path = run_preserved_statistics(model_dir, params, None, tmp_path / "cache-ray", tmp_path / "stat-shards")
    assert path.name == f"{info['cache_key']}.safetensors"  # where the edit looks for them
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["info"])
        for kind, expected in (("preserved", preserved), ("heldout", heldout)):
            for layer, want in expected.items():
                got = fh.get_tensor(f"{kind}.{layer}")
                assert got.dtype == want.dtype == torch.float32
                assert float((got - want).abs().max()) <= STATISTICS_RTOL * float(want.abs().max())
    for key in ("prose_tokens", "question_tokens", "heldout_tokens", "texts", "heldout_texts"):
        assert meta[key] == info[key]
    assert meta["shards"] == 2
    # The edit's own lookup now finds them: a cache hit, no recomputation.
    _, _, again = cached_preserved_moments(model, tokenizer, params, tmp_path / "cache-ray", False)
    assert again["cache_hit"]


def test_erasure_flow_on_ray(
    tiny_llama_dir: Path, tmp_path: Path, prefect_harness, ray_cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole erasure flow with ``ray.address`` set: the statistics shards fill the cache the edit then
    reads (a cache hit in its report), the evaluation runs in shards, and the version registers as usual."""
    import yaml
    from flow_repo import make_repo

    from flows.erasure import erasure_flow

    # A cache of its own, so the statistics are not already there from another test's in-process run (the
    # flow passes the cache folder to the shard tasks by argument).
    monkeypatch.setenv("UNIERASE_CACHE", str(tmp_path / "cache"))
    root = make_repo(tmp_path / "repo")
    raw = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    raw["ray"] = {"address": "local", "num_cpus": 2, "eval_chunk_size": 4, "statistics_shards": 2}
    (root / "ray.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    summary = erasure_flow(request_id="ray-1", base_model=tiny_llama_dir, root=root, params_file="ray.yaml")
    assert (summary["version"], summary["parent_version"]) == ("2", "1")
    run = next((root / "outputs/private").glob("ray-1-*"))
    report = json.loads((run / "erase/report.json").read_text())
    assert report["diagnostics"]["covariance"]["cache_hit"] is True  # computed by the shards, read by the edit
    assert report["diagnostics"]["covariance"]["shards"] == 2
    evaluation = json.loads((run / "eval/report.json").read_text())
    assert evaluation["splits"]["forget"]["num_items"] == len(
        (run / "eval/items/forget.jsonl").read_text().splitlines()
    )
    assert "eval_forget_efficacy" in summary["metrics"]
