"""What a model directory must hold for an edit, checked before any weight is read: the layers that
``edit.layers`` names, and the modules that ``model.layer_template`` and ``model.mlp_out_template``
point at in them.

The model is built from its ``config.json`` on PyTorch's meta device (shapes only, no memory, well
under a second for SmolLM2), so a wrong layer or template fails in seconds instead of after the
token has been learned.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from unierase.config import Params
from unierase.model.loading import ModelDirectoryError, check_model_dir


def edited_module_paths(params: Params) -> list[str]:
    """The module paths an erasure reaches into: each edited layer and its MLP output projection."""
    paths = []
    for layer in params.edit.layers:
        paths += [params.model.layer_template.format(layer), params.model.mlp_out_template.format(layer)]
    return paths


def check_edit_modules(model_dir: str | Path, params: Params) -> Path:
    """Checks that the model in ``model_dir`` has every layer and module the edit config names.

    Raises:
        ModelDirectoryError: The directory is not a causal LM, its config cannot be built, a layer of
            ``edit.layers`` is beyond the model's ``num_hidden_layers``, or a templated module path is
            not in the model. The message names the layer or the path and the setting to change.
    """
    model_dir = check_model_dir(model_dir)
    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError, KeyError) as err:
        raise ModelDirectoryError(f"{model_dir}/config.json cannot be read as a model config ({err})") from None
    num_layers = getattr(config, "num_hidden_layers", None)
    if num_layers is not None and (bad := [x for x in params.edit.layers if not 0 <= x < num_layers]):
        raise ModelDirectoryError(
            f"edit.layers {bad} are not layers of {model_dir.name}, which has {num_layers} "
            f"(0 to {num_layers - 1}); change edit.layers in params.yaml"
        )
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise ModelDirectoryError(f"{model_dir} cannot be built as a causal language model ({err})") from None
    for path in edited_module_paths(params):
        try:
            model.get_submodule(path)
        except AttributeError:
            raise ModelDirectoryError(
                f"{model_dir.name} has no module {path!r}; set model.layer_template and model.mlp_out_template "
                "in params.yaml to this architecture's module paths (e.g. GPT-2: transformer.h.{}.mlp.c_proj)"
            ) from None
    return model_dir
