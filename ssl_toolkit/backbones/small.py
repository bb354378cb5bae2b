"""Small convolutional nets sized for a CPU: 8x8 digits and 28x28 MNIST-style images.

They follow the ConvNet-13 recipe of the Mean Teacher paper in miniature (3x3 convolutions,
BatchNorm, leaky ReLU 0.1, max-pool + dropout between stages, global average pooling) so the
algorithms see the same kinds of noise as in the paper.
"""

from __future__ import annotations

from torch import Tensor, nn

from ssl_toolkit.backbones.common import ClassifierHead, TimmClassifierMixin, register_backbone


def _conv_block(in_channels: int, out_channels: int, kernel: int = 3, padding: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.1),
    ]


class SmallConvNet(TimmClassifierMixin, nn.Module):
    """Stages of 3x3 conv blocks separated by max-pool and dropout, then global pooling and a linear head.

    Example:
        >>> net = SmallConvNet(widths=((32, 32), (64, 64)), in_chans=1, num_classes=10)
    """

    def __init__(
        self,
        widths: tuple[tuple[int, ...], ...],
        in_chans: int = 3,
        num_classes: int = 10,
        drop_rate: float = 0.3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_chans
        for stage, stage_widths in enumerate(widths):
            if stage > 0:
                layers += [nn.MaxPool2d(2), nn.Dropout(drop_rate)]
            for width in stage_widths:
                layers += _conv_block(channels, width)
                channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = channels
        self.head = ClassifierHead(channels, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(self.pool(x).flatten(1), pre_logits=pre_logits)


def model_kwargs(pretrained: bool, name: str, kwargs: dict) -> dict:
    """The keyword arguments meant for the model, minus timm's loader bookkeeping."""
    if pretrained:
        raise ValueError(f"{name} has no pretrained weights; it is trained from scratch")
    # timm's create_model passes these for its weight loader; our nets have no weights to load.
    return {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}


@register_backbone
def convnet_tiny(pretrained: bool = False, **kwargs) -> SmallConvNet:
    """About 66k parameters; for 8x8 digits (two stages: 8x8 then 4x4)."""
    return SmallConvNet(widths=((32, 32), (64, 64)), **model_kwargs(pretrained, "convnet_tiny", kwargs))


@register_backbone
def convnet_small(pretrained: bool = False, **kwargs) -> SmallConvNet:
    """About 36k parameters; for 28x28 images (three stages: 28, 14, 7), sized for a CPU."""
    return SmallConvNet(widths=((16, 16), (32, 32), (64,)), **model_kwargs(pretrained, "convnet_small", kwargs))


@register_backbone
def convnet_medium(pretrained: bool = False, **kwargs) -> SmallConvNet:
    """About 140k parameters: convnet_small at twice the width, for 28x28 images (four times its multiply-adds)."""
    return SmallConvNet(widths=((32, 32), (64, 64), (128,)), **model_kwargs(pretrained, "convnet_medium", kwargs))
