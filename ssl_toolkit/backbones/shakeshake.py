"""Shake-Shake 26 2x96d as in the Mean Teacher PyTorch code (Table 4), registered as ``shakeshake26_2x96d``.

Structure from CuriousAI/mean-teacher ``pytorch/mean_teacher/architectures.py`` (``cifar_shakeshake26``):
conv3x3-16 stem (no norm); three stages of 4 Shake-Shake blocks of widths 96/192/384 (strides 1/2/2);
each block has two branches ReLU -> conv3x3 -> BN -> ReLU -> conv3x3 -> BN, mixed per image by a random
coefficient in the forward pass and an independent one in the backward pass (0.5 at evaluation), and
added to a shortcut without a final activation. Shortcuts: 1x1 conv + BN into the first stage; into the
strided stages the "shift" downsample (two pixel grids offset by one, concatenated, ReLU, grouped 1x1
conv, BN). Global average pool, then the classifier(s). About 26.2M parameters.

References:
    Gastaldi, "Shake-Shake regularization", arXiv:1705.07485, 2017.
    Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017 (Table 4).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.backbones.common import (
    PAPER_MODEL_ARGS,
    ClassifierHead,
    TimmClassifierMixin,
    build_paper_backbone,
    check_network_options,
    fan_out_conv,
    paper_default_cfgs,
    register_backbone,
    residual_units,
)

__all__ = ["ShakeShakeBlock", "ShakeShakeResNet", "ShiftConvDownsample", "shake", "shakeshake26_2x96d"]


def shake(a: Tensor, b: Tensor, training: bool) -> Tensor:
    """Shake-Shake mix of two branch outputs, one coefficient per image.

    Training: the forward pass returns ``alpha * a + (1 - alpha) * b`` and the backward pass sends
    ``beta * grad`` to ``a`` and ``(1 - beta) * grad`` to ``b``, with ``alpha`` and ``beta`` independent
    draws from U(0, 1) ("Shake-Shake-Image" of Gastaldi 2017). Evaluation: ``0.5 * (a + b)``, both ways.

    Example:
        >>> a, b = torch.ones(3, 2), torch.zeros(3, 2)
        >>> shake(a, b, training=False)[0].tolist()
        [0.5, 0.5]
    """
    if a.shape != b.shape:
        raise ValueError(
            f"shake needs two branches of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if not training:
        return 0.5 * (a + b)
    gate_shape = (a.shape[0],) + (1,) * (a.dim() - 1)
    alpha = torch.rand(gate_shape, device=a.device, dtype=a.dtype)
    beta = torch.rand(gate_shape, device=a.device, dtype=a.dtype)
    diff = a - b
    # The value is b + alpha * diff; only the beta term carries gradient, so the backward pass sees
    # beta without a custom autograd.Function (which would also keep torch.compile out).
    return b + beta * diff + ((alpha - beta) * diff).detach()


def _bn(channels: int, momentum: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=momentum)


class ShiftConvDownsample(nn.Module):
    """Halving shortcut: the even pixel grid and the grid shifted by one pixel, concatenated, then
    ReLU -> grouped 1x1 conv (one group per grid, with bias) -> BN.

    Odd sizes are padded with a zero row/column for the shifted grid, so the output matches the
    ``ceil(H / 2)`` of the strided branches.
    """

    def __init__(self, c_in: int, c_out: int, bn_momentum: float) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.conv = fan_out_conv(2 * c_in, c_out, 1, groups=2, bias=True)
        self.bn = _bn(c_out, bn_momentum)

    def forward(self, x: Tensor) -> Tensor:
        shifted = x
        if x.shape[-2] % 2 or x.shape[-1] % 2:
            shifted = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        x = torch.cat((x[:, :, 0::2, 0::2], shifted[:, :, 1::2, 1::2]), dim=1)
        return self.bn(self.conv(self.act(x)))


class ShakeShakeBlock(nn.Module):
    """Two residual branches (ReLU -> conv3x3 -> BN -> ReLU -> conv3x3 -> BN) mixed by :func:`shake`,
    plus the shortcut; no activation after the sum (as in the Mean Teacher code)."""

    def __init__(
        self, c_in: int, c_out: int, stride: int, shortcut: nn.Module | None, bn_momentum: float
    ) -> None:
        super().__init__()

        def branch() -> nn.Sequential:
            return nn.Sequential(
                nn.ReLU(),  # not in place: the shortcut still reads the block input
                fan_out_conv(c_in, c_out, 3, stride),
                _bn(c_out, bn_momentum),
                nn.ReLU(inplace=True),
                fan_out_conv(c_out, c_out, 3),
                _bn(c_out, bn_momentum),
            )

        self.branch_a = branch()
        self.branch_b = branch()
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        mixed = shake(self.branch_a(x), self.branch_b(x), self.training)
        return self.shortcut(x) + mixed


class ShakeShakeResNet(TimmClassifierMixin, nn.Module):
    """Shake-Shake ResNet for small images, as in the Mean Teacher PyTorch code.

    Args:
        depth: 6n + 2 layers (n blocks per stage); 26 in the paper.
        base_width: width of the first stage (then 2x and 4x); 96 in the paper ("2x96d").
        num_classes: classes (0: return pooled features).
        in_chans: input channels.
        drop_rate: dropout before the classifier (timm's convention); 0 in the paper.
        bn_momentum: torch batch-norm momentum; 0.1 (torch's default) as in the reference code.

    Example:
        >>> model = ShakeShakeResNet(depth=8, base_width=8, num_classes=10).eval()
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        depth: int = 26,
        base_width: int = 96,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        blocks = residual_units("Shake-Shake ResNet", depth, extra_layers=2)
        check_network_options(in_chans, bn_momentum, base_width=base_width)
        stem_width = 16
        self.drop_rate = drop_rate
        self.stem = fan_out_conv(in_chans, stem_width, 3)

        stages = []
        c_in = stem_width
        for s, stride in enumerate((1, 2, 2)):
            c_out = base_width * 2**s
            if stride == 1:
                shortcut: nn.Module | None = nn.Sequential(fan_out_conv(c_in, c_out, 1), _bn(c_out, bn_momentum))
            else:
                shortcut = ShiftConvDownsample(c_in, c_out, bn_momentum)
            stage = [ShakeShakeBlock(c_in, c_out, stride, shortcut, bn_momentum)]
            stage += [ShakeShakeBlock(c_out, c_out, 1, None, bn_momentum) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.num_features = c_in
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))


default_cfgs = paper_default_cfgs(
    "shakeshake26_2x96d",
    "Shake-Shake regularization (Gastaldi, 2017), as in Mean Teacher (Tarvainen & Valpola, 2017) Table 4",
    "stem",
)


@register_backbone
def shakeshake26_2x96d(pretrained: bool = False, **kwargs: Any) -> ShakeShakeResNet:
    """Shake-Shake 26 2x96d of the Mean Teacher PyTorch code, about 26.2M parameters."""
    return build_paper_backbone(
        ShakeShakeResNet,
        "shakeshake26_2x96d",
        pretrained,
        PAPER_MODEL_ARGS,
        {"depth": 26, "base_width": 96},
        **kwargs,
    )
