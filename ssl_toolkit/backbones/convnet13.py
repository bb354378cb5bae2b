"""The 13-layer ConvNet of the Mean Teacher paper (Tables 1-3), registered in timm as ``convnet13``.

References:
    Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017 (architecture table
    in the appendix; TensorFlow code ``tensorflow/mean_teacher/model.py`` of CuriousAI/mean-teacher).
    Salimans & Kingma, "Weight normalization", NeurIPS 2016 (weight norm + mean-only batch norm).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from ssl_toolkit.backbones.common import (
    LEAKY_RELU_SLOPE,
    PAPER_MODEL_ARGS,
    TF_BN_MOMENTUM,
    ClassifierHead,
    TimmClassifierMixin,
    build_paper_backbone,
    check_momentum,
    check_network_options,
    check_rate,
    paper_default_cfgs,
    register_backbone,
)
from ssl_toolkit.errors import UserInputError

__all__ = ["ConvNet13", "MeanOnlyBatchNorm", "convnet13"]


class MeanOnlyBatchNorm(nn.Module):
    """Mean-only batch normalization: subtract the per-channel mean, add a learned bias.

    Training mode subtracts the batch mean and updates ``running_mean`` (an EMA with weight
    ``momentum`` on the new batch); evaluation mode subtracts ``running_mean``. Used with weight
    normalization, which fixes the scale, as in Salimans & Kingma (2016) and the Mean Teacher
    TensorFlow code. Works on ``(B, C)`` and ``(B, C, H, W)`` inputs.

    Deviation: the TensorFlow code starts its running mean at zero (its comment notes that starting
    from the first training mean "would probably be better"); this module copies the first training
    batch's mean instead, so a briefly trained model evaluates sensibly.

    Example:
        >>> bn = MeanOnlyBatchNorm(8)
        >>> y = bn(torch.randn(4, 8, 5, 5))
        >>> bool(y.mean(dim=(0, 2, 3)).abs().max() < 1e-5)
        True
    """

    def __init__(self, num_features: int, momentum: float = TF_BN_MOMENTUM) -> None:
        super().__init__()
        check_momentum(momentum)
        self.num_features = num_features
        self.momentum = momentum
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, self.num_features) + (1,) * (x.dim() - 2)
        if self.training:
            dims = [0, *range(2, x.dim())]
            mean = x.mean(dim=dims)
            with torch.no_grad():
                # Decided on the device (no .item()), so the update never waits for the GPU.
                weight = torch.where(self.num_batches_tracked == 0, 1.0, self.momentum)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), weight.to(self.running_mean.dtype))
                self.num_batches_tracked.add_(1)
        else:
            mean = self.running_mean
        return x - mean.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}"


class _WNLinearMeanOnlyBN(nn.Sequential):
    """Dense layer of the TensorFlow code's weight-norm mode: weight-normed linear, then mean-only BN."""

    def __init__(self, in_features: int, out_features: int, bn_momentum: float) -> None:
        super().__init__(
            _weight_norm(nn.Linear(in_features, out_features, bias=False)),
            MeanOnlyBatchNorm(out_features, bn_momentum),
        )


class ConvNet13(TimmClassifierMixin, nn.Module):
    """The Mean Teacher paper's 13-layer ConvNet (about 3.1M parameters).

    3x conv3x3-128 (same) -> maxpool 2 -> dropout; 3x conv3x3-256 (same) -> maxpool 2 -> dropout;
    conv3x3-512 (valid) -> conv1x1-256 -> conv1x1-128 -> global average pool -> dense; leaky ReLU 0.1
    after every conv. Each conv is followed by batch norm, or with ``weight_norm=True`` is weight
    normalized and followed by mean-only batch norm, as in the original TensorFlow code (where the
    dense layer is weight normalized with mean-only batch norm too).

    Global average pooling replaces the original fixed 6x6 pooling, so any input of at least 12x12
    works (28x28 MNIST-like and 96x96 STL-10 included).

    Args:
        num_classes: classes (0: return pooled features).
        in_chans: input channels.
        drop_rate: probability of the two inner dropout layers (the paper's 0.5).
        weight_norm: weight norm + mean-only batch norm instead of batch norm.
        bn_momentum: torch momentum of the (mean-only) batch norm statistics; 0.001 matches the
            TensorFlow code's EMA decay 0.999. Short runs may want 0.1.

    Deviation: weights start from a Kaiming-normal init (for leaky ReLU 0.1); the TensorFlow code's
    data-dependent initialization of the weight-norm scales is not done.

    References:
        Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017.

    Example:
        >>> import timm
        >>> model = timm.create_model("convnet13", num_classes=10)
        >>> model.eval()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    MIN_INPUT_SIZE = 12  # two 2x poolings, then a valid 3x3 conv

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.5,
        weight_norm: bool = False,
        bn_momentum: float = TF_BN_MOMENTUM,
    ) -> None:
        super().__init__()
        check_rate("drop_rate", drop_rate)
        check_network_options(in_chans, bn_momentum)
        self.weight_norm = weight_norm
        self.drop_rate = drop_rate

        def block(c_in: int, c_out: int, kernel: int, padding: int) -> nn.Sequential:
            conv = nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=False)
            nn.init.kaiming_normal_(conv.weight, a=LEAKY_RELU_SLOPE, nonlinearity="leaky_relu")
            if weight_norm:
                # The weight-norm scale starts at each filter's norm, so the effective weights keep
                # the Kaiming init above.
                norm: nn.Module = MeanOnlyBatchNorm(c_out, bn_momentum)
                conv = _weight_norm(conv)
            else:
                norm = nn.BatchNorm2d(c_out, momentum=bn_momentum)
            return nn.Sequential(conv, norm, nn.LeakyReLU(LEAKY_RELU_SLOPE))

        def stage(blocks: list[tuple[int, int, int, int]], pool: bool) -> nn.Sequential:
            # (c_in, c_out, kernel, padding) per block; a pooled stage ends with max-pool 2 and dropout.
            layers: list[nn.Module] = [block(*spec) for spec in blocks]
            if pool:
                layers += [nn.MaxPool2d(2), nn.Dropout(drop_rate)]
            return nn.Sequential(*layers)

        self.stem = block(in_chans, 128, 3, 1)
        self.stage1 = stage([(128, 128, 3, 1)] * 2, pool=True)
        self.stage2 = stage([(128, 256, 3, 1), (256, 256, 3, 1), (256, 256, 3, 1)], pool=True)
        self.stage3 = stage([(256, 512, 3, 0), (512, 256, 1, 0), (256, 128, 1, 0)], pool=False)
        self.num_features = 128
        make_head = None
        if weight_norm:

            def make_head(i: int, o: int) -> nn.Module:
                return _WNLinearMeanOnlyBN(i, o, bn_momentum)

        self.head = ClassifierHead(self.num_features, num_classes, make_head=make_head)

    def forward_features(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < self.MIN_INPUT_SIZE:
            raise UserInputError(
                f"convnet13 input of spatial size {tuple(x.shape[-2:])} is too small; "
                f"it needs at least {self.MIN_INPUT_SIZE}x{self.MIN_INPUT_SIZE}"
            )
        return self.stage3(self.stage2(self.stage1(self.stem(x))))


default_cfgs = paper_default_cfgs(
    "convnet13", "Mean teachers are better role models (Tarvainen & Valpola, 2017)", "stem.0"
)


@register_backbone
def convnet13(pretrained: bool = False, **kwargs: Any) -> ConvNet13:
    """Mean Teacher's 13-layer ConvNet; ``weight_norm=True`` for the original weight-norm variant."""
    return build_paper_backbone(ConvNet13, "convnet13", pretrained, (*PAPER_MODEL_ARGS, "weight_norm"), **kwargs)
