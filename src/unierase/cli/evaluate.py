"""``unierase evaluate``: TOFU metrics, UniErase's aggregates and leak audits for one model.

unierase evaluate --model DIR --data DIR --output OUT [--retain-eval DIR] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``evaluate`` subcommand."""
    parser = subparsers.add_parser("evaluate", help="evaluate a model: TOFU metrics, aggregates, leak audits")
    parser.add_argument("--model", required=True, type=Path, help="model directory")
    parser.add_argument("--data", required=True, type=Path, help="directory of *.jsonl splits (forget*, retain*, ...)")
    parser.add_argument("--output", required=True, type=Path, help="output directory for report.json and items/")
    parser.add_argument(
        "--retain-eval",
        type=Path,
        default=None,
        help="for forget quality: a saved evaluation of a retain model, or a retain model directory",
    )
    parser.add_argument("--params", type=Path, default=None, help="params.yaml (evaluation section)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when there is one, else cpu)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs the evaluation and prints the aggregates as JSON."""
    from unierase.stages.evaluate import evaluate_stage

    path = evaluate_stage(
        args.model, args.data, args.output, args.params, retain_eval=args.retain_eval, device=args.device
    )
    aggregates = json.loads(path.read_text(encoding="utf-8"))["aggregates"]
    print(json.dumps({k: v for k, v in aggregates.items() if not k.endswith(("_metrics", "_splits"))}, indent=2))
    return 0
