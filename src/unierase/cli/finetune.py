"""``unierase finetune``: make a target model that knows a set (and optionally a retain model).

unierase finetune --data FULL.jsonl --model DIR --output DIR [--retain-data RETAIN.jsonl --retain-output DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``finetune`` subcommand."""
    parser = subparsers.add_parser("finetune", help="fine-tune a model on question/answer pairs")
    parser.add_argument("--data", required=True, help="question/answer JSON Lines file (or a datasets hub name)")
    parser.add_argument("--model", required=True, type=Path, help="model directory to start from")
    parser.add_argument("--output", required=True, type=Path, help="where the fine-tuned model goes")
    parser.add_argument("--retain-data", default=None, help="retain split: also train a retain model on it")
    parser.add_argument("--retain-output", type=Path, default=None, help="where the retain model goes")
    parser.add_argument("--params", type=Path, default=None, help="params.yaml (finetune section)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when there is one, else cpu)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fine-tunes the target (and retain) model and prints where they were saved."""
    from unierase.config import load_params
    from unierase.stages.finetune import finetune_stage

    if (args.retain_data is None) != (args.retain_output is None):
        raise ValueError("--retain-data and --retain-output go together")
    config = load_params(args.params).finetune
    print(finetune_stage(args.model, args.data, args.output, config, device=args.device))
    if args.retain_data is not None:
        print(finetune_stage(args.model, args.retain_data, args.retain_output, config, device=args.device))
    return 0
