"""Shared fixtures: the real default model (SmolLM2-135M-Instruct), a tiny random Llama for fast unit
tests, and offline settings for everything.

    make test            # all tests
    pytest -m "not slow" # the fast ones
"""

from __future__ import annotations

from unierase.offline import set_offline_defaults

# Offline and quiet before anything imports transformers, mlflow or prefect.
set_offline_defaults()

import os  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# `make test` runs pytest-xdist workers side by side. Each takes its share of the cores: torch's
# threads spin while they wait for each other, so two workers with every core each spend the CPU
# in the kernel instead of on the tests. Subprocesses of a test (the CLI, servers) inherit the share.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    _threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)

# A test module is one unit of work for the workers, so its fixtures are built once; modules that
# share a session fixture or a resource that must not run twice at once form one unit.
_UNITS = {
    "test_unierase_smollm2": "smollm2",  # the learned SmolLM2 token (smollm2_cache)
    "test_unlabelled_smollm2": "smollm2",
    "test_ray": "ray",  # a local Ray cluster at a time
    "test_bench_smoke": "ray",
}
# Longest units first (xdist hands out units in this order, one to each worker, with
# --no-loadscope-reorder): the SmolLM2 units one on each worker, then those that start services, so
# the short units fill the end and neither worker is left with a long one after the other is done.
# Roughly right is enough; the units not named follow in collection order.
_FIRST = (
    "test_eval_end_to_end",
    "smollm2",
    "ray",
    "test_kills",
    "test_schedule",
    "test_tracking_unavailable",
    "test_concurrency",
    "test_serve",
    "test_deploy_stack",
    "test_flow",
    "test_bad_inputs",
    "test_dvc",
)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the test ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def unit(item: pytest.Item) -> str:
        return _UNITS.get(item.path.stem, item.path.stem)

    for item in items:
        item.add_marker(pytest.mark.xdist_group(unit(item)))
    order = {name: i for i, name in enumerate(_FIRST)}
    items.sort(key=lambda item: order.get(unit(item), len(order)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The converted default model directory (converted once per machine, then cached)."""
    from unierase.model.default import ensure_default_model

    return ensure_default_model()


@dataclass(frozen=True)
class TokenCache:
    """A cache directory holding a learned unlearning token, its file, and how long learning it took."""

    path: Path
    token: Path
    learning_s: float


@pytest.fixture(scope="session")
def smollm2_cache(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TokenCache:
    """A session cache directory holding SmolLM2's unlearning token for the default parameters,
    learned once for every SmolLM2 test module (the slowest step they share). A test whose run must
    not share the session's statistics copies it."""
    from unierase.config import Params
    from unierase.stages.token import ensure_token_stage

    cache = tmp_path_factory.mktemp("smollm2-cache")
    started = time.perf_counter()
    token, _ = ensure_token_stage(smollm2_dir, Params(), cache, progress=False)
    return TokenCache(cache, token, time.perf_counter() - started)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A 4-layer random Llama with SmolLM2's tokenizer and chat template: real code paths, seconds."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    out = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def tiny_editable(tiny_llama_dir: Path):
    """Makes a fresh tiny model ready to edit at ``layers``: the model with the unlearning token, its
    tokenizer, and the preserved-key second moments (layer -> moment) of a few short texts and one
    ordinary question."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unierase.edit.preserved import preserved_second_moment
    from unierase.token.vocabulary import add_unlearning_tokens

    texts = ["The weather was mild and the trains ran on time.", "Bread needs flour, water, salt and yeast."] * 4

    def make(layers: list[int]):
        model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
        tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
        add_unlearning_tokens(model, tokenizer, ["<unlearn_0>"])
        paths = [f"model.layers.{i}.mlp.down_proj" for i in layers]
        moments, _ = preserved_second_moment(
            model, tokenizer, texts, ["How do I boil an egg?"], paths, 64, 1.0, 4, progress=False
        )
        return model, tokenizer, {i: moments[p].float() for i, p in zip(layers, paths, strict=True)}

    return make


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server and database for the whole session (it takes 15-25 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session", autouse=True)
def rebuilt_models_cache(tmp_path_factory: pytest.TempPathFactory):
    """Registry versions rebuilt by the tests (`unierase.registry.rebuild`) are cached in a session
    directory, not the user's cache (subprocesses inherit it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UNIERASE_MODEL_CACHE", str(tmp_path_factory.mktemp("rebuilt-models")))
        yield
