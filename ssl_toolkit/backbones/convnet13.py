"""The 13-layer ConvNet of the Mean Teacher paper (Tables 1-3), registered in timm as ``convnet13``.

This module also holds the pieces shared by the paper backbones (``wrn28_2``, ``shakeshake26_2x96d``):
the classifier heads with the optional second head of the logit-distance variant, and the timm
entry-point plumbing (no pretrained weights exist for any of them; unsupported timm options raise).

References:
    Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017 (architecture table
    in the appendix; TensorFlow code ``tensorflow/mean_teacher/model.py`` of CuriousAI/mean-teacher).
    Salimans & Kingma, "Weight normalization", NeurIPS 2016 (weight norm + mean-only batch norm).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from timm.models import (
    build_model_with_cfg,
    generate_default_cfgs,
    is_model,
    model_entrypoint,
    register_model,
)
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from ssl_toolkit.errors import UserInputError

__all__ = [
    "LEAKY_RELU_SLOPE",
    "TF_BN_MOMENTUM",
    "ClassifierHeads",
    "ConvNet13",
    "MeanOnlyBatchNorm",
    "TimmClassifierMixin",
    "build_paper_backbone",
    "check_momentum",
    "check_num_heads",
    "check_rate",
    "convnet13",
    "paper_default_cfg",
    "register_paper_model",
]

LEAKY_RELU_SLOPE = 0.1
# The TensorFlow code keeps its evaluation statistics with an EMA of decay 0.999; torch's momentum
# is the weight of the new batch, so 1 - 0.999.
TF_BN_MOMENTUM = 0.001

# timm keyword arguments that every paper backbone understands, beyond its own constructor arguments.
_TIMM_ENTRY_KWARGS = frozenset(
    {
        "pretrained_cfg",
        "pretrained_cfg_overlay",
        "cache_dir",
        "drop_path_rate",
        "global_pool",
        "device",
        "dtype",
    }
)


# ----------------------------------------------------------------------------------------------------------
# Shared by the paper backbones
# ----------------------------------------------------------------------------------------------------------


def paper_default_cfg(paper: str, first_conv: str, **overrides: Any) -> dict[str, Any]:
    """timm ``pretrained_cfg`` for a paper backbone: no weights, 32x32 inputs, 10 classes by default.

    Mean/std are the identity because these backbones carry no weights whose inputs were normalized in a
    particular way; the toolkit normalizes (or whitens) the data itself.
    """
    cfg: dict[str, Any] = {
        "url": "",
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": None,
        "mean": (0.0, 0.0, 0.0),
        "std": (1.0, 1.0, 1.0),
        "crop_pct": 1.0,
        "first_conv": first_conv,
        "classifier": "head",
        "paper_name": paper,
    }
    cfg.update(overrides)
    return cfg


def register_paper_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """``timm.models.register_model`` that refuses to shadow a model another module already registered.

    timm only warns and overwrites on a duplicate name; silently replacing someone's backbone is worse
    than failing at import. Re-registering from the same module (a reload) stays allowed.
    """
    name = fn.__name__
    if is_model(name):
        existing = model_entrypoint(name)
        if existing.__module__ != fn.__module__:
            raise RuntimeError(
                f"timm model name {name!r} is already registered by {existing.__module__}; "
                f"{fn.__module__} cannot register it again"
            )
    return register_model(fn)


def build_paper_backbone(
    model_cls: type[nn.Module],
    variant: str,
    pretrained: bool,
    model_kwargs: Iterable[str],
    arch: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a paper backbone through timm's ``build_model_with_cfg`` after checking the timm options.

    ``model_kwargs`` are the constructor arguments a user may set; ``arch`` the ones the registered
    name fixes (depth, width). Anything else that timm does not route to every model is refused with
    the list of valid names, rather than a bare ``TypeError``.
    """
    if pretrained:
        raise UserInputError(
            f"{variant}: pretrained=True is not possible, no pretrained weights exist for this paper "
            "backbone; use pretrained=False (the default) and train it"
        )
    valid = set(model_kwargs) | _TIMM_ENTRY_KWARGS
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise UserInputError(f"{variant}: unknown option(s) {unknown}; valid options are {sorted(valid)}")
    drop_path_rate = kwargs.pop("drop_path_rate", 0.0)
    if drop_path_rate:
        raise UserInputError(
            f"{variant}: drop_path_rate={drop_path_rate!r} is not supported (the paper network has no "
            "stochastic depth); leave it unset or 0"
        )
    global_pool = kwargs.pop("global_pool", "avg")
    if global_pool != "avg":
        raise UserInputError(f"{variant}: global_pool={global_pool!r} is not supported; only 'avg' is")
    device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    model = build_model_with_cfg(model_cls, variant, pretrained=False, **(arch or {}), **kwargs)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


def check_num_heads(num_heads: int, num_classes: int) -> None:
    """Raise unless ``num_heads`` is 1, or 2 (logit-distance variant) with a classifier to duplicate."""
    if num_heads not in (1, 2):
        raise UserInputError(
            f"num_heads={num_heads!r} is not valid; use 1 (one logit tensor) or 2 (the logit-distance "
            "variant: a tuple of two logit tensors)"
        )
    if num_heads == 2 and num_classes <= 0:
        raise UserInputError(
            f"num_heads=2 needs a classifier, but num_classes={num_classes!r}; use num_classes > 0"
        )
    if num_classes < 0:
        raise UserInputError(
            f"num_classes={num_classes!r} is not valid; use a positive count, or 0 for no head"
        )


def check_momentum(value: float) -> None:
    """Raise unless a batch-norm momentum (weight of the new batch) lies in (0, 1]."""
    if not 0.0 < value <= 1.0:
        raise UserInputError(f"bn_momentum={value!r} is not valid; use a value in (0, 1], e.g. 0.001 or 0.1")


def check_rate(name: str, value: float) -> None:
    """Raise unless a dropout probability lies in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise UserInputError(f"{name}={value!r} is not valid; a dropout probability must lie in [0, 1)")


class ClassifierHeads(nn.Module):
    """One or two linear classifiers over the same pooled features.

    With ``num_heads=2`` (Mean Teacher's logit-distance variant) ``forward`` returns ``(head1, head2)``,
    each ``(B, num_classes)``: head 1 takes the classification loss, head 2 the consistency loss. With
    one head it returns a single tensor, as any timm classifier does; with ``num_classes=0`` the
    (dropped-out) features themselves.

    Args:
        in_features: width of the pooled features.
        num_classes: classes per head; 0 for no classifier.
        num_heads: 1 or 2.
        drop_rate: dropout on the features before the classifier (timm's ``drop_rate``).
        make_head: builds one head from ``(in_features, num_classes)``; ``nn.Linear`` by default.

    Example:
        >>> heads = ClassifierHeads(128, 10, num_heads=2)
        >>> [t.shape for t in heads(torch.zeros(4, 128))]
        [torch.Size([4, 10]), torch.Size([4, 10])]
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        num_heads: int = 1,
        drop_rate: float = 0.0,
        make_head: Callable[[int, int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        check_num_heads(num_heads, num_classes)
        check_rate("drop_rate", drop_rate)
        self.in_features = in_features
        self.num_classes = num_classes
        self.num_heads = num_heads
        self.make_head = make_head or nn.Linear
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.heads = self._build()

    def _build(self) -> nn.ModuleList:
        if self.num_classes == 0:
            return nn.ModuleList()
        return nn.ModuleList(
            self.make_head(self.in_features, self.num_classes) for _ in range(self.num_heads)
        )

    def reset(self, num_classes: int) -> None:
        """Replace the heads by freshly initialized ones with ``num_classes`` outputs."""
        check_num_heads(self.num_heads, num_classes)
        device = next((p.device for p in self.heads.parameters()), None)
        self.num_classes = num_classes
        self.heads = self._build()
        if device is not None:
            self.heads.to(device)

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor | tuple[Tensor, ...]:
        x = self.drop(x)
        if pre_logits or self.num_classes == 0:
            return x
        if self.num_heads == 1:
            return self.heads[0](x)
        return tuple(head(x) for head in self.heads)


class TimmClassifierMixin:
    """The timm classifier interface (``forward_features`` / ``forward_head`` / ``get_classifier`` /
    ``reset_classifier``) for a model with a ``head`` of type :class:`ClassifierHeads`."""

    head: ClassifierHeads
    num_features: int

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def num_heads(self) -> int:
        return self.head.num_heads

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "avg"):
            raise UserInputError(f"global_pool={global_pool!r} is not supported; only 'avg' is")
        self.head.reset(num_classes)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor | tuple[Tensor, ...]:
        return self.head(x.mean(dim=(2, 3)), pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        return self.forward_head(self.forward_features(x))  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------------------------
# ConvNet-13
# ----------------------------------------------------------------------------------------------------------


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
        num_classes: classes per head (0: return pooled features).
        in_chans: input channels.
        drop_rate: probability of the two inner dropout layers (the paper's 0.5).
        weight_norm: weight norm + mean-only batch norm instead of batch norm.
        bn_momentum: torch momentum of the (mean-only) batch norm statistics; 0.001 matches the
            TensorFlow code's EMA decay 0.999. Short runs may want 0.1.
        num_heads: 2 for the logit-distance variant (``forward`` returns two logit tensors).

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
        num_heads: int = 1,
    ) -> None:
        super().__init__()
        check_rate("drop_rate", drop_rate)
        check_momentum(bn_momentum)
        if in_chans < 1:
            raise UserInputError(f"in_chans={in_chans!r} is not valid; use a positive channel count")
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

        self.stem = block(in_chans, 128, 3, 1)
        self.stage1 = nn.Sequential(
            block(128, 128, 3, 1),
            block(128, 128, 3, 1),
            nn.MaxPool2d(2),
            nn.Dropout(drop_rate),
        )
        self.stage2 = nn.Sequential(
            block(128, 256, 3, 1),
            block(256, 256, 3, 1),
            block(256, 256, 3, 1),
            nn.MaxPool2d(2),
            nn.Dropout(drop_rate),
        )
        self.stage3 = nn.Sequential(
            block(256, 512, 3, 0),
            block(512, 256, 1, 0),
            block(256, 128, 1, 0),
        )
        self.num_features = 128
        make_head = None
        if weight_norm:

            def make_head(i: int, o: int) -> nn.Module:
                return _WNLinearMeanOnlyBN(i, o, bn_momentum)

        self.head = ClassifierHeads(self.num_features, num_classes, num_heads, make_head=make_head)

    def forward_features(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < self.MIN_INPUT_SIZE:
            raise UserInputError(
                f"convnet13 input of spatial size {tuple(x.shape[-2:])} is too small; "
                f"it needs at least {self.MIN_INPUT_SIZE}x{self.MIN_INPUT_SIZE}"
            )
        return self.stage3(self.stage2(self.stage1(self.stem(x))))


_CONVNET13_ARGS = ("num_classes", "in_chans", "drop_rate", "weight_norm", "bn_momentum", "num_heads")

default_cfgs = generate_default_cfgs(
    {
        "convnet13": paper_default_cfg(
            "Mean teachers are better role models (Tarvainen & Valpola, 2017)", "stem.0"
        )
    }
)


@register_paper_model
def convnet13(pretrained: bool = False, **kwargs: Any) -> ConvNet13:
    """Mean Teacher's 13-layer ConvNet; ``weight_norm=True`` for the original weight-norm variant."""
    return build_paper_backbone(ConvNet13, "convnet13", pretrained, _CONVNET13_ARGS, **kwargs)
