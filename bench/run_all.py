"""The whole benchmark suite: quality, sequential requests, then cost (time, memory, storage, pipeline
overhead), and on a CUDA machine the Llama-3-8B-shaped scale run, each writing its JSON, markdown table
(and plot) under ``--out``.

    python -m bench.run_all                                    # make bench; SmolLM2, the defaults of each part
    python -m bench.run_all --parts quality,cost --set evaluation.max_new_tokens=48

Takes the flags every part shares (``--model``, ``--out``, ``--work``, ``--params``, ``--set``, ``--methods``,
...) and passes them on; part-specific flags (sizes, authors) go to the part's own command.
"""

from __future__ import annotations

import sys

from bench import cost, gpu_scale, quality, sequential
from bench._cli import common_parser, setup_logging

PARTS = {"quality": quality.main, "sequential": sequential.main, "cost": cost.main, "gpu_scale": gpu_scale.main}


def default_parts() -> list[str]:
    """Every part; the 8B-shaped scale run only where CUDA is present (it needs ~90 GiB of GPU memory)."""
    import torch

    return [p for p in PARTS if p != "gpu_scale" or torch.cuda.is_available()]


def main(argv: list[str] | None = None) -> int:
    """Runs the chosen parts in turn with the shared flags."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = common_parser(__doc__)
    parser.add_argument(
        "--parts", default=",".join(default_parts()), help="comma-separated parts to run, in this order"
    )
    args = parser.parse_args(argv)  # checks every flag before hours of running
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if unknown := [p for p in parts if p not in PARTS]:
        parser.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    shared = [a for i, a in enumerate(argv) if a != "--parts" and (i == 0 or argv[i - 1] != "--parts")]
    shared = [a for a in shared if not a.startswith("--parts=")]
    for part in parts:
        print(f"\n## {part}\n", flush=True)
        PARTS[part](shared)
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(main())
