"""UniErase at Llama-3-8B scale on a GPU: token learning, preserved-key statistics (cold and cached) and a
400-item edit on a model of Llama-3-8B's shape, with absolute times and peak GPU memory per phase.

    python -m bench.gpu_scale --set edit.value_batch_size=32            # 8B-shaped, TOFU forget10 (400 items)
    python -m bench.gpu_scale --shape tiny --items 6 --retain-items 6   # smoke run, any device
    bash scripts/gpu_check.sh             # one GPU, < 5 min: sharded bf16 load, token, 100-item edit

``--sharded-load`` saves the built model in ``model.dtype`` and loads it back the way every stage loads
a model (`unierase.model.loading.load_configured_model`: ``model.device_map=auto`` spreads its layers over
the machine's GPUs with accelerate); the edit then solves each layer in float64 on that layer's device.

No 8B checkpoint can be fetched here or on the GPU machine, so the weights are random (Llama's own
initialisation, seeded) and the tokenizer is SmolLM2's. That measures what scale costs and whether the
edit's mechanics hold at d_in = 14336: after the edit, does every forget prompt open with the unlearning
token, and do other prompts keep the first token they had? It does not measure forgetting of real
knowledge (the quality part does, on SmolLM2). Keys sit at each question's last word: on random
weights there is no subject for causal tracing to find. Writes ``gpu_scale.json`` and ``gpu_scale.md``
under ``--out`` after every phase, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from bench._cli import ROOT, base_model, common_parser, resolve_params, setup_logging
from bench.lib.measure import machine_info, measure
from bench.lib.output import markdown_table, write_json, write_markdown
from unierase.data.facts import Fact
from unierase.data.splits import load_split
from unierase.edit.erasure import erase_facts
from unierase.model.generation import generate_answers
from unierase.model.loading import load_configured_model
from unierase.stages.statistics import cached_preserved_moments
from unierase.token.learning import learn_token

# Llama-3-8B's config.json, less the vocabulary (the tokenizer's) and the checkpoint-only fields.
SHAPES: dict[str, dict[str, Any]] = {
    "llama3-8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 8192,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
    },
    # Ten layers so that the default edit layers (4-8) exist; for smoke runs.
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 10,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
    },
}

COLUMNS = [
    ("phase", "phase"),
    ("items", "items"),
    ("seconds", "seconds"),
    ("peak_gpu_gib", "peak GPU GiB"),
    ("peak_rss_mb", "peak RSS MiB"),
    ("detail", "detail"),
]


def build_model(
    shape: str, vocab_size: int, device: torch.device, seed: int, dtype: torch.dtype = torch.float32
) -> PreTrainedModel:
    """A randomly initialised Llama of the given shape, built directly on ``device`` (float32), in ``dtype``."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, **SHAPES[shape])
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.to(dtype).eval()


def sharded_load(model: PreTrainedModel, tokenizer, params, directory: Path) -> tuple[PreTrainedModel, dict]:
    """Saves ``model`` (safetensors shards) and loads it back with the stages' loader, in ``model.dtype``
    with ``model.device_map``; returns the loaded model and where its layers went."""
    model.save_pretrained(directory, max_shard_size="5GB")
    tokenizer.save_pretrained(directory)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    loaded, _ = load_configured_model(directory, params.model)
    devices = sorted({str(d) for d in (getattr(loaded, "hf_device_map", None) or {}).values()})
    return loaded, {"dtype": str(next(loaded.parameters()).dtype), "devices": devices or [str(loaded.device)]}


def keyed_at_last_word(facts: list[Fact]) -> list[Fact]:
    """Each fact with its question's last word as the subject (where the edit's key is read)."""
    return [f.model_copy(update={"subject": re.findall(r"[A-Za-z][\w'-]*", f.question)[-1]}) for f in facts]


def first_tokens(model: PreTrainedModel, tokenizer, questions: list[str], batch_size: int) -> list[int]:
    """The greedy first answer token of each chat-formatted question."""
    gens = generate_answers(model, tokenizer, questions, max_new_tokens=1, batch_size=batch_size, progress=False)
    return [g.token_ids[0] if g.token_ids else -1 for g in gens]


@contextmanager
def timed() -> Iterator[dict[str, float]]:
    """Wall time (GPU work finished), peak process RSS and, on CUDA, peak GPU memory allocated (GiB)."""
    fields: dict[str, float] = {}
    with measure() as m:
        yield fields
    fields.update(seconds=m.seconds, peak_rss_mb=m.peak_rss_mb)
    if m.peak_gpu_mb is not None:
        fields["peak_gpu_gib"] = m.peak_gpu_mb / 1024


def rate(hits: list[bool]) -> float | None:
    return sum(hits) / len(hits) if hits else None


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = common_parser(__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama3-8b", help="model shape")
    parser.add_argument(
        "--tokenizer", type=Path, default=None, help="tokenizer directory (default: --model's, else SmolLM2's)"
    )
    parser.add_argument("--items", type=int, default=400, help="forget items (TOFU forget10 has 400)")
    parser.add_argument("--retain-items", type=int, default=400, help="retain items (protected, then checked)")
    parser.add_argument("--check-batch-size", type=int, default=64, help="batch size of the first-token checks")
    parser.add_argument(
        "--sharded-load",
        action="store_true",
        help="save the built model and load it back with model.dtype and model.device_map (e.g. bf16, auto)",
    )
    parser.add_argument("--skip-cached", action="store_true", help="leave out the cached-statistics phase")
    args = parser.parse_args(argv)
    params = resolve_params(args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        # TF32 matmuls for the model's float32 weights; the edit's solve stays in float64.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or base_model(args))
    forget = keyed_at_last_word(load_split(Path(args.tofu) / "forget10.jsonl")[: args.items])
    retain = keyed_at_last_word(load_split(Path(args.tofu) / "retain90.jsonl")[: args.retain_items])
    if len(forget) < args.items:
        raise SystemExit(f"{args.tofu}/forget10.jsonl has {len(forget)} items, fewer than --items {args.items}")
    out = Path(args.out)
    machine = machine_info(ROOT)
    machine.update(shape=args.shape, device=str(device))
    rows: list[dict[str, Any]] = []

    def record(phase: str, fields: dict[str, Any], **detail: Any) -> None:
        rows.append({"phase": phase, **fields, **detail, "detail": _detail(detail)})
        write_json({"machine": machine, "rows": rows}, out / "gpu_scale.json")
        write_markdown(
            out / "gpu_scale.md",
            f"UniErase at {args.shape} scale",
            [("Phases", markdown_table(rows, COLUMNS)), ("How", __doc__.split("\n\n", 2)[2].strip())],
            machine,
        )
        print(markdown_table(rows[-1:], COLUMNS).splitlines()[-1], flush=True)

    progress = not args.no_progress
    dtype = getattr(torch, params.model.dtype)
    with timed() as f:
        model = build_model(args.shape, len(tokenizer), device, args.seed, dtype)
    total = sum(p.numel() for p in model.parameters())
    record("build", f, parameters=total, layers=model.config.num_hidden_layers, hidden=model.config.hidden_size)
    if args.sharded_load:
        with timed() as f:
            model, placed = sharded_load(model, tokenizer, params, Path(args.work) / "gpu_scale_model")
        record("sharded_load", f, device_map=params.model.device_map, **placed)

    with timed() as f:
        token = learn_token(model, tokenizer, params, progress)
    record("token_learning", f, first_epoch_loss=round(token.losses[0], 4), last_epoch_loss=round(token.losses[-1], 4))

    cache = Path(args.work) / "gpu_scale"
    for phase in ("covariance_cold",) if args.skip_cached else ("covariance_cold", "covariance_cached"):
        with timed() as f:
            preserved, heldout, info = cached_preserved_moments(model, tokenizer, params, cache, progress)
        record(
            phase, f, cache_hit=info["cache_hit"], tokens=info.get("prose_tokens", 0) + info.get("question_tokens", 0)
        )

    forget_q, retain_q = [x.question for x in forget], [x.question for x in retain]
    target = tokenizer.convert_tokens_to_ids(token.names[0])
    forget_before = first_tokens(model, tokenizer, forget_q, args.check_batch_size)
    retain_before = first_tokens(model, tokenizer, retain_q, args.check_batch_size)
    with timed() as f:
        result = erase_facts(model, tokenizer, forget, params, preserved, retain, heldout=heldout, progress=progress)
    outcome = result.outcome
    changed = result.delta.num_changed()
    record(
        "edit",
        f,
        items=len(forget),
        **{k: round(v, 2) for k, v in result.timings.items()},
        params_changed=changed,
        params_changed_share=round(changed / total, 5),
        value_nll_max=round(max(outcome.value_losses), 4),
        value_rounds_max=max(outcome.value_rounds),
        unbound=sum(x > params.edit.value_retry_nll for x in outcome.value_losses),
        unbound_after_round=outcome.unbound,  # one edit per entry, each with a report per layer below,
        retain_fired_after_round=outcome.retain_fired,  # and one per restore round kept
        preserved_drift=[round(layer.preserved_drift, 4) for layer in outcome.layers],
        heldout_drift=[round(layer.heldout_drift or 0.0, 4) for layer in outcome.layers],
    )

    with timed() as f:
        forget_after = first_tokens(model, tokenizer, forget_q, args.check_batch_size)
        retain_after = first_tokens(model, tokenizer, retain_q, args.check_batch_size)
    record(
        "check",
        f,
        items=len(forget) + len(retain),
        # Before the edit too: a random model's flat next-token distribution can already favour the token.
        forget_trigger_before=rate([t == target for t in forget_before]),
        forget_trigger_rate=rate([t == target for t in forget_after]),
        retain_trigger_before=rate([t == target for t in retain_before]),
        retain_trigger_rate=rate([t == target for t in retain_after]),
        retain_first_token_kept=rate([a == b for a, b in zip(retain_before, retain_after, strict=True)]),
    )
    return rows


def _detail(detail: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in detail.items() if v is not None)


if __name__ == "__main__":
    setup_logging()
    main(sys.argv[1:])
    sys.exit(0)
