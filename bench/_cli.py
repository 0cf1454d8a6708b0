"""Flags every benchmark part shares, and the parameters they resolve to."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import yaml

from unierase.config import Params, load_params

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOFU = ROOT.parent / "shared" / "tofu"
METHODS = ("unierase", "grad_ascent", "grad_diff", "npo", "idk_sft")
# UniErase at each depth (erase.depth), as the quality benchmark names its cells.
UNIERASE_DEPTHS = {"unierase": "paper", "unierase_deep": "deep"}


def common_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the shared flags (model, output and work directories, parameters, methods),
    described by the first paragraph of a script's docstring."""
    description = " ".join(doc.split("\n\n")[0].split())
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="base model directory (default: embedded SmolLM2)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results directory")
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench", help="models, caches and scratch")
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="params.yaml to start from")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a parameter (edit.v_steps=10)"
    )
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated: unierase and baseline names")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated authors")
    p.add_argument("--tofu", type=Path, default=DEFAULT_TOFU, help="TOFU JSON Lines (real authors, world facts)")
    p.add_argument("--general-items", type=int, default=10, help="real-author and world-fact questions each")
    p.add_argument("--device", default=None, help="torch device (default: CUDA when present, else the CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def add_target_flags(p: argparse.ArgumentParser) -> None:
    """The fine-tuned target's workload; parts given the same values (and ``--seed``) share the target
    under ``--work``."""
    p.add_argument("--authors", type=int, default=40, help="fictitious authors the target is fine-tuned on")
    add_workload_flags(p)


def add_workload_flags(p: argparse.ArgumentParser) -> None:
    """The generated-author workload every part evaluates on."""
    p.add_argument("--questions-per-author", type=int, default=3, help="questions per author (at most 8)")
    p.add_argument("--holdout-authors", type=int, default=2, help="authors never trained on (membership audit)")
    p.add_argument("--retain-eval-items", type=int, default=12, help="retain questions in the evaluation")


def add_redo_flag(p: argparse.ArgumentParser, size: str) -> None:
    """``--redo``: cells deleted first, so they are measured again (`bench.lib.cells`); SIZE counts ``size``."""
    help_text = f"comma-separated cells to delete first, so they are measured again (SIZE: {size})"
    p.add_argument("--redo", type=names, default=[], metavar="METHOD[@SIZE]", help=help_text)


def names(text: str) -> list[str]:
    """A comma-separated list of names."""
    return [n.strip() for n in text.split(",") if n.strip()]


def _set(tree: dict[str, Any], assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set takes KEY=VALUE (edit.v_steps=10), got {assignment!r}")
    *path, leaf = key.split(".")
    node = tree
    for part in path:
        if not isinstance(node.get(part), dict):
            raise SystemExit(f"--set {key}: {part!r} is not a parameter section")
        node = node[part]
    node[leaf] = yaml.safe_load(raw)


def resolve_params(args: argparse.Namespace) -> Params:
    """``--params`` (project defaults when the file is absent) with every ``--set`` applied, validated."""
    return with_sets(load_params(args.params), args.set)


def with_sets(params: Params, assignments: list[str]) -> Params:
    """``params`` with each ``KEY=VALUE`` applied, validated."""
    if not assignments:
        return params
    tree = params.model_dump(mode="json")
    for assignment in assignments:
        _set(tree, assignment)
    return Params.model_validate(tree)  # pydantic checks every override (types, ranges, unknown keys)


def resolve_methods(args: argparse.Namespace, variants: tuple[str, ...] = ()) -> list[str]:
    """The chosen methods, in the order given (registered methods, and the part's ``variants``); unknown
    names are an error."""
    from unierase.methods import METHODS

    known = [*METHODS, *variants]
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    if unknown := [m for m in names if m not in known]:
        raise SystemExit(f"unknown methods {unknown}; choose from {', '.join(known)}")
    return names


def base_model(args: argparse.Namespace) -> Path:
    """The base model directory: ``--model`` or the embedded default (converted once, then cached)."""
    from unierase.model.default import ensure_default_model

    return Path(args.model).resolve() if args.model else ensure_default_model()


def workload(args: argparse.Namespace, params: Params, base: Path, *flags: str, **extra: Any) -> dict[str, Any]:
    """What makes a part's cells comparable across runs (`bench.lib.cells`): the values of the named flags,
    ``extra``, the parameters and the base model's weights digest."""
    from unierase.digests import model_dir_sha256

    fields = {flag: getattr(args, flag) for flag in flags}
    return {**fields, **extra, "model_weights": model_dir_sha256(base), "params": params.model_dump(mode="json")}


def setup_logging() -> None:
    """INFO logs of the benchmark and the core on stderr."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def floats(text: str) -> list[float]:
    """A comma-separated list of numbers."""
    return [float(v) for v in text.split(",") if v.strip()]


def ints(text: str) -> list[int]:
    """A comma-separated list of integers."""
    return [int(v) for v in text.split(",") if v.strip()]
