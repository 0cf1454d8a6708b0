"""``unierase prepare`` and ``unierase validate``: the data stages of ``dvc.yaml``.

    unierase prepare --output data/sets
    unierase validate --forget data/sets/forget.jsonl --retain data/sets/retain.jsonl --model DIR \
        --params params.yaml --output outputs/validate
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``prepare`` and ``validate`` subcommands."""
    prepare = subparsers.add_parser("prepare", help="write the embedded default forget and retain sets")
    prepare.add_argument("--output", type=Path, default=Path("data/sets"), help="directory for forget/retain.jsonl")
    prepare.set_defaults(func=run_prepare)

    validate = subparsers.add_parser("validate", help="check forget and retain sets (Great Expectations)")
    validate.add_argument("--forget", required=True, type=Path, help="forget set (JSON Lines)")
    validate.add_argument("--retain", type=Path, default=None, help="retain set (JSON Lines)")
    validate.add_argument("--model", type=Path, default=None, help="model directory (tokenizer, context length)")
    validate.add_argument("--params", type=Path, default=None, help="params.yaml (validation section)")
    validate.add_argument("--output", type=Path, default=Path("outputs/validate"), help="summary.json and docs/")
    validate.set_defaults(func=run_validate)


def run_prepare(args: argparse.Namespace) -> int:
    """Writes the built-in request: ``forget.jsonl`` and ``retain.jsonl``."""
    from unierase.data.builtin_facts import default_forget, default_retain
    from unierase.data.facts import write_facts

    for name, facts in (("forget", default_forget()), ("retain", default_retain())):
        print(write_facts(facts, args.output / f"{name}.jsonl"))
    return 0


def run_validate(args: argparse.Namespace) -> int:
    """Validates the sets; writes ``summary.json`` (a DVC metric) and exits 1 when they are invalid."""
    from unierase.config import load_params
    from unierase.data.validation import validate_sets
    from unierase.model.default import ensure_default_model

    config = load_params(args.params).validation
    model = args.model or ensure_default_model()
    result = validate_sets(args.forget, args.retain, config, model_dir=model, docs_dir=args.output / "docs")
    summary = {
        "valid": result.success,
        "rows": result.row_counts,
        "failed_expectations": len(result.failures),
        "docs": str(result.docs_index),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(result.message())
    return 0 if result.success else 1
