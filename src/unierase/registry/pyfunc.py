"""A registered version as an MLflow pyfunc that answers questions, and its export to a plain
transformers directory for serving.

    mlflow.pyfunc.load_model("models:/NAME@champion").predict(["What is the capital of France?"])
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import yaml

import mlflow

MODEL_ARTIFACT = "model"  # key of the transformers directory among the pyfunc's artifacts
PIP_REQUIREMENTS = ["torch", "transformers", "safetensors", "mlflow", "unierase"]


class UnlearnedLM(mlflow.pyfunc.PythonModel):
    """Greedy chat answers from the transformers directory stored with the version.

    Args:
        max_new_tokens: Generation length limit of every answer.
    """

    def __init__(self, max_new_tokens: int = 64) -> None:
        self.max_new_tokens = max_new_tokens

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Loads the model and tokenizer from the version's artifacts (on the CPU unless CUDA is there),
        after checking every stored file, and the erasure's delta, against the digests recorded at
        registration."""
        from unierase.model.loading import load_model
        from unierase.registry.integrity import verify_delta, verify_model_dir

        model_dir = Path(context.artifacts[MODEL_ARTIFACT])
        verify_delta(verify_model_dir(model_dir))
        self.model, self.tokenizer = load_model(model_dir)

    def predict(self, context, model_input: list[str], params: dict | None = None) -> list[str]:
        """Answers each question (a DataFrame's single column arrives as a list too).

        Args:
            context: The pyfunc context (unused; the model is loaded in ``load_context``).
            model_input: Questions, one answer each.
            params: Unused; generation is greedy with ``max_new_tokens`` set when the version was logged.
        """
        from unierase.model.generation import generate_answers

        questions = [str(q) for q in model_input]
        answers = generate_answers(
            self.model, self.tokenizer, questions, max_new_tokens=self.max_new_tokens, progress=False
        )
        return [a.text for a in answers]


def log_language_model(
    model_dir: Path, max_new_tokens: int = 64, delta: dict | None = None
) -> tuple[mlflow.models.model.ModelInfo, str]:
    """Logs a transformers directory as an `UnlearnedLM` pyfunc in the active run, with the manifest of
    its files' digests (`unierase.registry.integrity`). Returns the model info and the manifest's SHA-256.

    Args:
        model_dir: The transformers directory.
        max_new_tokens: Generation length of the pyfunc's answers.
        delta: For an erasure: ``{"run_id", "artifact_path", "sha256"}`` of its weight delta.
    """
    from unierase.digests import file_sha256
    from unierase.registry.integrity import write_manifest

    with tempfile.TemporaryDirectory() as tmp:
        # The artifact keeps its directory's name: give it a fixed one so every version looks alike.
        staged = Path(tmp) / MODEL_ARTIFACT
        shutil.copytree(model_dir, staged, copy_function=_link_or_copy)
        manifest_sha256 = file_sha256(write_manifest(staged, delta))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=UnlearnedLM(max_new_tokens),
            artifacts={MODEL_ARTIFACT: str(staged)},
            pip_requirements=PIP_REQUIREMENTS,
        )
    return info, manifest_sha256


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link where the file system allows one (no copy of gigabytes of weights), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def export_model_dir(model_uri: str, out_dir: Path) -> Path:
    """Downloads a registered version and leaves its full transformers directory at ``out_dir``.

    Args:
        model_uri: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``.
        out_dir: Target directory; it must not exist yet (nothing half-written: the copy is renamed into place).
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists already; export into a new directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    from unierase.registry.integrity import MANIFEST, verify_delta, verify_model_dir

    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".export-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        spec = yaml.safe_load((local / "MLmodel").read_text())
        rel = spec["flavors"]["python_function"]["artifacts"][MODEL_ARTIFACT]["path"]
        verify_delta(verify_model_dir(local / rel, _registered_manifest_sha256(model_uri)))
        (local / rel / MANIFEST).unlink()  # registry metadata: the export is the directory as registered
        (local / rel).rename(out_dir)
    return out_dir


def _registered_manifest_sha256(model_uri: str) -> str | None:
    """The manifest digest the registry recorded for ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``."""
    from mlflow import MlflowClient
    from unierase.registry import tags as T

    ref = model_uri.removeprefix("models:/")
    client = MlflowClient()
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    else:
        name, number = ref.rsplit("/", 1)
        version = client.get_model_version(name, number)
    return version.tags.get(T.MANIFEST_SHA256)
