"""Backbones: ours are registered in timm's model registry, so any timm model name works too."""

from __future__ import annotations

from pathlib import Path

import timm
from torch import nn

from ssl_toolkit.backbones import convnet13, shakeshake, small, wrn  # noqa: F401  (registers them in timm)
from ssl_toolkit.backbones.common import backbone_modules, register_backbone
from ssl_toolkit.backbones.pretrained import load_pretrained_file
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.naming import closest

__all__ = ["create_backbone", "list_backbones", "register_backbone"]


def list_backbones(pattern: str = "*") -> list[str]:
    """The backbones registered with :func:`register_backbone` (this toolkit's and plugins'), matching
    a shell-style wildcard. Any other timm model name is accepted as well."""
    return timm.list_models(pattern, module=backbone_modules())


def create_backbone(name: str, in_chans: int, num_classes: int, pretrained_file: str | Path | None = None) -> nn.Module:
    """Build backbone ``name`` from timm's registry for the data set's channels and classes.

    ``pretrained_file`` starts every weight but the classifier from that file (see
    :mod:`ssl_toolkit.backbones.pretrained`); the classifier is freshly initialized for ``num_classes``.
    """
    if not timm.is_model(name):
        raise UserInputError(
            f"unknown backbone {name!r}{closest(name, list_backbones())}; valid: {', '.join(list_backbones())}, "
            f"or any timm model name (see timm.list_models())"
        )
    model = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=num_classes)
    if pretrained_file is not None:
        load_pretrained_file(model, pretrained_file, name)
    return model
