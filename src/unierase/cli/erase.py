"""``unierase erase``: erase facts from a model, writing the erased model, its delta and a report.

    unierase erase --forget FORGET.jsonl [--retain RETAIN.jsonl] [--model DIR] \\
        [--mode batch|sequential|precise] [--method unierase|grad_ascent|...] --output OUT
    unierase learn-token --model DIR --output TOKEN.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unierase.config import load_params


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``erase`` and ``learn-token``."""
    p = subparsers.add_parser("erase", help="erase the facts of a forget set from a model")
    p.add_argument(
        "--forget", type=Path, action="append", required=True, help="JSONL of facts (repeat: one request each)"
    )
    p.add_argument("--retain", type=Path, help="JSONL of facts to keep")
    p.add_argument("--model", type=Path, help="model directory (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--mode", choices=["batch", "sequential", "precise"], help="override erase.mode")
    p.add_argument("--method", help="override erase.method (unierase or a baseline)")
    p.add_argument(
        "--token",
        type=Path,
        help="a learned unlearning token for this base model (default: the cached one, learned on first use)",
    )
    p.add_argument("--params", type=Path, help="params.yaml (default: built-in defaults)")
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="cache of learned tokens and preserved-key statistics (default: ~/.cache/unierase)",
    )
    p.add_argument("--output", type=Path, required=True, help="output directory (must not exist or be empty)")
    p.set_defaults(func=_erase)

    t = subparsers.add_parser("learn-token", help="learn the unlearning token for a base model (Phase I)")
    t.add_argument("--model", type=Path, help="model directory (default: the embedded model)")
    t.add_argument("--params", type=Path, help="params.yaml")
    t.add_argument("--output", type=Path, required=True, help="token file to write (.safetensors)")
    t.add_argument("--retain", type=Path, help="retain JSONL whose questions token.domain_questions draws from")
    t.set_defaults(func=_learn_token)


def _params(args: argparse.Namespace):
    params = load_params(args.params)
    overrides = {
        k: v for k, v in {"mode": getattr(args, "mode", None), "method": getattr(args, "method", None)}.items() if v
    }
    if overrides:
        params = params.model_copy(update={"erase": params.erase.model_copy(update=overrides)})
        params = type(params).model_validate(params.model_dump())  # re-validate the overrides
    return params


def _erase(args: argparse.Namespace) -> int:
    from unierase.data.facts import load_facts
    from unierase.inputs import check_new_output_dir
    from unierase.methods import build_method
    from unierase.model.structure import check_edit_modules
    from unierase.stages.erase import erase_stage, read_requests

    params = _params(args)
    check_new_output_dir(args.output)
    build_method(params.erase.method, params, progress=False)  # an unknown method is named first
    forget = list(args.forget) if len(args.forget) > 1 else args.forget[0]
    # Every input before any weight: the sets (by file and line), then the model's layers and modules.
    read_requests(forget, params.erase.mode)
    if args.retain:
        load_facts(args.retain)
    if args.model is not None and params.erase.method == "unierase":
        check_edit_modules(args.model, params)
    report = erase_stage(
        forget_path=forget,
        output_dir=args.output,
        params=params,
        model_dir=args.model,
        retain_path=args.retain,
        token_path=args.token,
        cache_dir=args.cache_dir,
    )
    keys = ("method", "mode", "num_forget", "token_learned", "before", "after", "params_changed_share", "timings_s")
    summary = {k: report[k] for k in keys}
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.output}/model, {args.output}/delta.safetensors, {args.output}/report.json")
    return 0


def _learn_token(args: argparse.Namespace) -> int:
    from unierase.model.default import ensure_default_model
    from unierase.model.structure import check_edit_modules
    from unierase.stages.token import learn_token_stage

    params, model = _params(args), args.model or ensure_default_model()
    check_edit_modules(model, params)  # the token's robust pass perturbs the edited layers
    path = learn_token_stage(model, args.output, params, retain_path=args.retain)
    print(f"wrote {path}")
    return 0
