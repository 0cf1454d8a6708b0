"""The params file of the command-line erasure tests on the tiny Llama: the defaults with one epoch of
each token phase, two edited layers and a small prose corpus for the statistics, so that an
``unierase erase`` runs in seconds on a CPU.

Imported by tests/test_cli_erase.py, tests/test_subject.py and tests/test_delta_versions.py.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from unierase.config import Params


def write_tiny_erase_params(folder: Path, **edit) -> Path:
    """Writes ``folder/params.yaml`` (and the corpus it names) and returns its path; ``edit`` overrides
    fields of the edit section."""
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(f"Line {i} of plain prose about trains and bread." for i in range(40)))
    params = Params().model_dump(mode="json")
    params["token"].update(stage1_epochs=1, stage2_epochs=1, robust_epochs=0, num_general_questions=4)
    # bind_rounds: the random tiny model binds no question, so every bind round runs; two exercise them.
    edit = {
        "layers": [1, 2],
        "v_steps": 2,
        "num_context_prefixes": 1,
        "nullspace_threshold": 0.5,
        "bind_rounds": 2,
    } | edit
    params["edit"].update(**edit)
    params["covariance"].update(corpus=str(corpus), num_samples=40)
    params["erase"].update(max_new_tokens=4)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path
