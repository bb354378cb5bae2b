"""Backbones: ours are registered in timm's model registry, so any timm model name works too."""

from __future__ import annotations

import timm
from torch import nn

from ssl_toolkit.backbones import convnet13, shakeshake, small, wrn  # noqa: F401  (registers them in timm)
from ssl_toolkit.backbones.common import backbone_modules, register_backbone
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.naming import closest

__all__ = ["create_backbone", "list_backbones", "register_backbone"]


def list_backbones(pattern: str = "*") -> list[str]:
    """The backbones registered with :func:`register_backbone` (this toolkit's and plugins'), matching
    a shell-style wildcard. Any other timm model name is accepted as well."""
    return timm.list_models(pattern, module=backbone_modules())


def create_backbone(name: str, in_chans: int, num_classes: int) -> nn.Module:
    """Build backbone ``name`` from timm's registry for the data set's channels and classes."""
    if not timm.is_model(name):
        raise UserInputError(
            f"unknown backbone {name!r}{closest(name, list_backbones())}; valid: {', '.join(list_backbones())}, "
            f"or any timm model name (see timm.list_models())"
        )
    return timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=num_classes)
