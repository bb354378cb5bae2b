"""Starting a backbone from a weights file on disk: no download, nothing in the file is executed.

A ``.safetensors`` file is read with safetensors, anything else with ``torch.load(weights_only=True)``
(the ``state_dict`` or ``model`` entry of a training checkpoint is unwrapped, a ``module.`` prefix
of DataParallel weights dropped), as timm's own ``load_state_dict`` does. As timm's
``pretrained=True`` does, a first convolution saved for another number of input channels is adapted
with ``timm.models.adapt_input_conv`` (grayscale data from RGB weights), and the classifier is not
loaded: the backbone keeps the fresh head it was built with for the data set's classes. Unlike
timm's loader, every other weight must be in the file, with its shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from timm.models import adapt_input_conv
from torch import nn

from ssl_toolkit.errors import UserInputError

VALID_FILES = "a .safetensors file, or a torch state dict (.pth, .pt, .bin) readable with weights_only=True"


def classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the model's classifier (``get_classifier()``), by module identity."""
    classifier = model.get_classifier()
    for name, module in model.named_modules():
        if module is classifier:
            prefix = f"{name}." if name else ""
            return {prefix + key for key in module.state_dict()}
    return set()


def first_conv_name(model: nn.Module) -> str | None:
    """The first ``nn.Conv2d`` in the model: the layer that sees the input channels."""
    return next((name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)), None)


def read_weights(path: Path) -> dict[str, Any]:
    """The state dict in ``path``; nothing in the file is executed."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        return {}
    return {key.removeprefix("module."): value for key, value in state.items() if isinstance(value, torch.Tensor)}


def load_pretrained_file(model: nn.Module, path: str | Path, backbone: str) -> None:
    """Load the weights in ``path`` into ``model`` except its classifier; raise UserInputError when
    the file is unreadable or does not fit the backbone, naming what is wrong."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserInputError(f"--pretrained-file {path}: no such file; valid: {VALID_FILES}")
    try:
        state = read_weights(path)
    except Exception as error:  # safetensors and torch.load signal a bad file with many exception types
        detail = " ".join(str(error).split())[:160] or type(error).__name__
        raise UserInputError(f"--pretrained-file {path} cannot be read safely ({detail}); valid: {VALID_FILES}") \
            from None
    if not state:
        raise UserInputError(f"--pretrained-file {path} holds no weights; valid: {VALID_FILES}")
    head = classifier_keys(model)
    state = {key: value for key, value in state.items() if key not in head}
    first = first_conv_name(model)
    if first is not None and f"{first}.weight" in state:
        expected = model.get_submodule(first).weight
        saved = state[f"{first}.weight"]
        if saved.ndim == 4 and saved.shape[1] != expected.shape[1] and saved.shape[0] == expected.shape[0]:
            state[f"{first}.weight"] = adapt_input_conv(expected.shape[1], saved)
    own = model.state_dict()
    wrong_shape = [key for key, value in state.items() if key in own and tuple(own[key].shape) != tuple(value.shape)]
    missing = sorted(set(own) - set(state) - head)
    unexpected = sorted(set(state) - set(own))
    problems = []
    if wrong_shape:
        key = wrong_shape[0]
        problems.append(f"{key} is {tuple(state[key].shape)} in the file but {tuple(own[key].shape)} in the model")
    if missing:
        problems.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unknown weights (e.g. {unexpected[0]})")
    if problems:
        raise UserInputError(f"--pretrained-file {path} does not fit backbone {backbone}: {'; '.join(problems)}; "
                             f"valid: weights saved from a {backbone} model")
    model.load_state_dict(state, strict=False)
