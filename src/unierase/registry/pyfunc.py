"""A registered version as an MLflow pyfunc that answers questions, and its export to a plain
transformers directory for serving.

    mlflow.pyfunc.load_model("models:/NAME@champion").predict(["What is the capital of France?"])

An erasure version stores its delta against its parent (`unierase.registry.packing`); loading or
exporting it rebuilds the full directory from the base version and the chain of deltas, checking every
digest on the way (`unierase.registry.rebuild`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import mlflow
from unierase.registry.rebuild import MODEL_ARTIFACT

PIP_REQUIREMENTS = ["torch", "transformers", "safetensors", "mlflow", "unierase"]


class UnlearnedLM(mlflow.pyfunc.PythonModel):
    """Greedy chat answers from the transformers directory stored with the version.

    An answer that opens with an unlearning token stops where the token closes it, and says what
    ``after_token`` lets it (`unierase.config.EvalConfig.after_token`): served as it was evaluated.

    Args:
        max_new_tokens: Generation length limit of every answer.
        after_token: 'refusal' or 'free'.
    """

    def __init__(self, max_new_tokens: int = 64, after_token: str = "refusal") -> None:
        self.max_new_tokens = max_new_tokens
        self.after_token = after_token

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Loads the model and tokenizer (on the CPU unless CUDA is there) from the version's artifacts:
        every stored file checked against the digests recorded at registration, and a delta version
        rebuilt from its parent, through the registry the model was loaded from, and cached."""
        from unierase.model.loading import load_model
        from unierase.registry.rebuild import build_from_stored

        stored = Path(context.artifacts[MODEL_ARTIFACT])
        if (stored / "unierase-delta.json").is_file():
            model_dir = build_from_stored(stored)
        else:  # stored in full: load it where it lies, once its files are checked
            from unierase.registry.integrity import verify_delta, verify_model_dir

            verify_delta(verify_model_dir(stored))
            model_dir = stored
        self.model, self.tokenizer = load_model(model_dir)

    def predict(self, context, model_input: list[str], params: dict | None = None) -> list[str]:
        """Answers each question (a DataFrame's single column arrives as a list too).

        Args:
            context: The pyfunc context (unused; the model is loaded in ``load_context``).
            model_input: Questions, one answer each.
            params: Unused; generation is greedy with ``max_new_tokens`` set when the version was logged.
        """
        from unierase.model.generation import generate_answers
        from unierase.token.refusals import served_refusals
        from unierase.token.vocabulary import unlearning_token_ids

        questions = [str(q) for q in model_input]
        gate = unlearning_token_ids(self.tokenizer)
        answers = generate_answers(
            self.model,
            self.tokenizer,
            questions,
            max_new_tokens=self.max_new_tokens,
            stop_token_ids=gate or None,
            # A version logged before after_token existed lacks the attribute: it is served as the default.
            refusals=served_refusals(self.tokenizer, getattr(self, "after_token", "refusal")) if gate else None,
            progress=False,
        )
        return [a.text for a in answers]


def log_language_model(
    model_dir: Path, max_new_tokens: int = 64, parent: dict | None = None
) -> tuple[mlflow.models.model.ModelInfo, str, str]:
    """Logs a transformers directory as an `UnlearnedLM` pyfunc in the active run, with the manifest of
    its stored files' digests (`unierase.registry.integrity`): as a delta of its parent when given one
    and the delta is smaller, else in full. Returns the model info, the manifest's SHA-256 and how the
    directory is stored (``full`` or ``delta``).

    Args:
        model_dir: The transformers directory.
        max_new_tokens: Generation length of the pyfunc's answers.
        parent: For an erasure: ``{"name", "version", "dir"}`` of its parent version (``dir`` its full
            directory) and ``key_blocks``, the erase run's key blocks file or None.
    """
    from unierase.digests import file_sha256
    from unierase.registry import tags as T
    from unierase.registry.integrity import write_manifest
    from unierase.registry.packing import pack_delta
    from unierase.registry.rebuild import statistics_dir

    with tempfile.TemporaryDirectory() as tmp:
        # The artifact keeps its directory's name: give it a fixed one so every version looks alike.
        staged = Path(tmp) / MODEL_ARTIFACT
        storage = T.FULL
        if parent is not None:
            staged.mkdir()
            recipe = pack_delta(
                model_dir,
                parent["dir"],
                staged,
                parent["name"],
                parent["version"],
                parent.get("key_blocks"),
                statistics_dir(),
            )
            if recipe is not None:
                storage = T.DELTA
            else:
                staged.rmdir()
        if storage == T.FULL:
            shutil.copytree(model_dir, staged, copy_function=_link_or_copy)
        manifest_sha256 = file_sha256(write_manifest(staged))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=UnlearnedLM(max_new_tokens),
            artifacts={MODEL_ARTIFACT: str(staged)},
            pip_requirements=PIP_REQUIREMENTS,
        )
    return info, manifest_sha256, storage


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link where the file system allows one (no copy of gigabytes of weights), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def export_model_dir(model_uri: str, out_dir: Path) -> Path:
    """Leaves a registered version's full transformers directory at ``out_dir``: rebuilt from the base
    version and its chain of deltas (every digest checked) and copied out of the cache.

    Args:
        model_uri: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``.
        out_dir: Target directory; it must not exist yet (nothing half-written: the copy is renamed into place).
    """
    from mlflow import MlflowClient
    from unierase.registry.rebuild import materialize

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists already; export into a new directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    name, version = resolve_model_uri(MlflowClient(), model_uri)
    built = materialize(MlflowClient(), name, version)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".export-") as tmp:
        staged = Path(tmp) / "model"
        shutil.copytree(built, staged)  # a copy, not links: changing the export never changes the cache
        staged.rename(out_dir)
    return out_dir


def resolve_model_uri(client, model_uri: str) -> tuple[str, str]:
    """``(name, version)`` of ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``."""
    ref = model_uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, str(client.get_model_version_by_alias(name, alias).version)
    name, number = ref.rsplit("/", 1)
    return name, number
