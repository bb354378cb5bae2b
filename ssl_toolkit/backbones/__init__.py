"""Backbones: ours are registered in timm's model registry, so any timm model name works too."""

from __future__ import annotations

import timm
from torch import nn

from ssl_toolkit.backbones import convnet13, shakeshake, small, wrn  # noqa: F401  (registers them in timm)
from ssl_toolkit.errors import UserInputError

SSL_BACKBONES = ["convnet_tiny", "convnet_small", "convnet_medium", "convnet13", "wrn28_2", "shakeshake26_2x96d"]


def list_backbones() -> list[str]:
    """The backbones this toolkit defines (any other timm model name is accepted as well)."""
    return list(SSL_BACKBONES)


def create_backbone(name: str, in_chans: int, num_classes: int, **kwargs) -> nn.Module:
    """Build backbone ``name`` from timm's registry for the data set's channels and classes."""
    if not timm.is_model(name):
        raise UserInputError(
            f"unknown backbone {name!r}; valid: {', '.join(list_backbones())}, "
            f"or any timm model name (see timm.list_models())"
        )
    return timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=num_classes, **kwargs)
