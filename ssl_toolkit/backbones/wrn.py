"""Wide ResNet 28-2 of Oliver et al. 2018, registered in timm as ``wrn28_2``.

Built from the facts of the paper and its TensorFlow code (brain-research/realistic-ssl-evaluation,
``lib/networks.py`` and ``lib/hparams.py``): initial conv3x3-16; three groups of 4 pre-activation
units of widths 32/64/128 (strides 1/2/2); batch norm with decay 0.999 and epsilon 1e-3; leaky ReLU
0.1; a 1x1 conv shortcut where the width changes; final batch norm, leaky ReLU, global average pool
and dense layer. About 1.5M parameters.

References:
    Oliver, Odena, Raffel, Cubuk & Goodfellow, "Realistic evaluation of deep semi-supervised learning
    algorithms", NeurIPS 2018.
    Zagoruyko & Komodakis, "Wide residual networks", BMVC 2016.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ssl_toolkit.backbones.common import (
    LEAKY_RELU_SLOPE,
    PAPER_MODEL_ARGS,
    TF_BN_MOMENTUM,
    ClassifierHead,
    TimmClassifierMixin,
    build_paper_backbone,
    check_network_options,
    fan_out_conv,
    paper_default_cfgs,
    register_backbone,
    residual_units,
)

__all__ = ["WideResNet", "wrn28_2"]

# tf.contrib.layers.batch_norm's default epsilon, which the reference code does not override.
TF_BN_EPS = 1e-3


class PreActUnit(nn.Module):
    """Pre-activation residual unit: BN -> lReLU -> conv3x3 -> BN -> lReLU -> conv3x3, plus a shortcut.

    The shortcut is the identity, or a strided 1x1 conv where width or resolution changes. With
    ``activate_before_residual`` (first unit of the network) the shortcut starts from the activated
    input, as in the reference code; otherwise from the raw input.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        activate_before_residual: bool,
        bn_momentum: float,
    ) -> None:
        super().__init__()
        self.activate_before_residual = activate_before_residual
        self.bn1 = nn.BatchNorm2d(c_in, eps=TF_BN_EPS, momentum=bn_momentum)
        self.act1 = nn.LeakyReLU(LEAKY_RELU_SLOPE)
        self.conv1 = fan_out_conv(c_in, c_out, 3, stride)
        self.bn2 = nn.BatchNorm2d(c_out, eps=TF_BN_EPS, momentum=bn_momentum)
        self.act2 = nn.LeakyReLU(LEAKY_RELU_SLOPE)
        self.conv2 = fan_out_conv(c_out, c_out, 3, 1)
        self.shortcut = fan_out_conv(c_in, c_out, 1, stride) if (c_in != c_out or stride != 1) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        activated = self.act1(self.bn1(x))
        residual = self.conv2(self.act2(self.bn2(self.conv1(activated))))
        return residual + self.shortcut(activated if self.activate_before_residual else x)


class WideResNet(TimmClassifierMixin, nn.Module):
    """Pre-activation Wide ResNet for small images, as in Oliver et al. (2018); ``wrn28_2`` is 28-2.

    Args:
        depth: 6n + 4 layers (n units per group); 28 in the paper.
        widen_factor: group widths are 16k, 32k, 64k; 2 in the paper.
        num_classes: classes (0: return pooled features).
        in_chans: input channels.
        drop_rate: dropout before the classifier (timm's convention); 0 in the paper.
        bn_momentum: torch batch-norm momentum; 0.001 is the reference code's decay 0.999.
            Short runs may want 0.1.

    Deviation: TensorFlow's "SAME" padding of a strided 3x3 conv pads only bottom/right; torch pads
    one pixel on every side. Output sizes are the same.

    Example:
        >>> import timm
        >>> timm.create_model("wrn28_2", num_classes=10).eval()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 2,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        bn_momentum: float = TF_BN_MOMENTUM,
    ) -> None:
        super().__init__()
        units = residual_units("Wide ResNet", depth, extra_layers=4)
        check_network_options(in_chans, bn_momentum, widen_factor=widen_factor)
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.drop_rate = drop_rate

        self.stem = fan_out_conv(in_chans, widths[0], 3, 1)
        groups = []
        for g, stride in enumerate((1, 2, 2)):
            c_in, c_out = widths[g], widths[g + 1]
            group = [
                PreActUnit(c_in, c_out, stride, activate_before_residual=(g == 0), bn_momentum=bn_momentum)
            ]
            group += [PreActUnit(c_out, c_out, 1, False, bn_momentum) for _ in range(units - 1)]
            groups.append(nn.Sequential(*group))
        self.groups = nn.Sequential(*groups)
        self.final_bn = nn.BatchNorm2d(widths[3], eps=TF_BN_EPS, momentum=bn_momentum)
        self.final_act = nn.LeakyReLU(LEAKY_RELU_SLOPE)
        self.num_features = widths[3]
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate, make_head=_glorot_linear)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.final_act(self.final_bn(self.groups(self.stem(x))))


def _glorot_linear(in_features: int, out_features: int) -> nn.Linear:
    # The reference's dense layer: Glorot-normal weights, zero bias.
    linear = nn.Linear(in_features, out_features)
    nn.init.xavier_normal_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


default_cfgs = paper_default_cfgs(
    "wrn28_2", "Realistic evaluation of deep semi-supervised learning algorithms (Oliver et al., 2018)", "stem"
)


@register_backbone
def wrn28_2(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """Wide ResNet 28-2 of Oliver et al. (2018), about 1.5M parameters."""
    return build_paper_backbone(
        WideResNet, "wrn28_2", pretrained, PAPER_MODEL_ARGS, {"depth": 28, "widen_factor": 2}, **kwargs
    )
