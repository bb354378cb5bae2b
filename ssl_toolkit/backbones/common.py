"""Pieces shared by the backbones: classifier heads, option checks and the timm entry-point plumbing.

The paper
backbones (``convnet13``, ``wrn28_2``, ``shakeshake26_2x96d``) are registered through
:func:`register_backbone` and built through :func:`build_paper_backbone`: no pretrained weights exist
for any of them, and timm options they do not support raise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from timm.models import (
    build_model_with_cfg,
    generate_default_cfgs,
    is_model,
    model_entrypoint,
    register_model,
)
from torch import Tensor, nn

from ssl_toolkit.errors import UserInputError

__all__ = [
    "LEAKY_RELU_SLOPE",
    "PAPER_MODEL_ARGS",
    "TF_BN_MOMENTUM",
    "ClassifierHead",
    "TimmClassifierMixin",
    "build_paper_backbone",
    "check_momentum",
    "check_network_options",
    "check_num_classes",
    "check_rate",
    "fan_out_conv",
    "paper_default_cfg",
    "paper_default_cfgs",
    "backbone_modules",
    "register_backbone",
    "residual_units",
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

# Constructor arguments that every paper backbone accepts (each may add its own).
PAPER_MODEL_ARGS = ("num_classes", "in_chans", "drop_rate", "bn_momentum")


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


def paper_default_cfgs(name: str, paper: str, first_conv: str) -> dict[str, Any]:
    """The ``default_cfgs`` a paper backbone's module defines for timm: one entry, ``name``."""
    return generate_default_cfgs({name: paper_default_cfg(paper, first_conv)})


_BACKBONE_MODULES: set[str] = set()


def register_backbone(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a backbone in timm's registry, refusing to shadow a model another module registered.

    timm only warns and overwrites on a duplicate name; silently replacing someone's backbone is worse
    than failing at import. Re-registering from the same module (a reload) stays allowed. The
    module is remembered, so :func:`ssl_toolkit.backbones.list_backbones` lists its models.
    """
    name = fn.__name__
    if is_model(name):
        existing = model_entrypoint(name)
        if existing.__module__ != fn.__module__:
            raise UserInputError(
                f"backbone name {name!r} is already registered by {existing.__module__}; "
                f"{fn.__module__} cannot register it again"
            )
    registered = register_model(fn)
    _BACKBONE_MODULES.add(fn.__module__.split(".")[-1])
    return registered


def backbone_modules() -> list[str]:
    """The timm registry's module names under which :func:`register_backbone` put models."""
    return sorted(_BACKBONE_MODULES)


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


def check_num_classes(num_classes: int) -> None:
    """Raise unless ``num_classes`` is a positive count, or 0 for no classifier."""
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


def check_network_options(in_chans: int, bn_momentum: float, **widths: int) -> None:
    """Raise unless each width option (``widen_factor=2``, ...) is a positive integer, the batch-norm
    momentum lies in (0, 1] and the input has at least one channel, checked in that order."""
    for name, width in widths.items():
        if width < 1:
            raise UserInputError(f"{name}={width!r} is not valid; use a positive integer")
    check_momentum(bn_momentum)
    if in_chans < 1:
        raise UserInputError(f"in_chans={in_chans!r} is not valid; use a positive channel count")


def residual_units(network: str, depth: int, extra_layers: int) -> int:
    """Units per group of a three-group residual ``network`` of ``depth = 6n + extra_layers`` layers.

    Raises for any other depth, naming the valid ones (each unit has two convolutions).
    """
    if depth < 6 + extra_layers or (depth - extra_layers) % 6 != 0:
        valid = ", ".join(str(6 * n + extra_layers) for n in range(1, 5))
        raise UserInputError(
            f"depth={depth!r} is not valid; a {network} has 6n + {extra_layers} layers ({valid}, ...)"
        )
    return (depth - extra_layers) // 6


def fan_out_conv(
    c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False
) -> nn.Conv2d:
    """A "same"-padded conv initialized as in the WRN and Shake-Shake reference code."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=bias)
    # The references draw from N(0, 2 / (k * k * c_out)), i.e. Kaiming normal on fan-out.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


class ClassifierHead(nn.Module):
    """A linear classifier over pooled features, after optional dropout.

    With ``num_classes=0`` it returns the (dropped-out) features themselves, as timm classifiers do.

    Args:
        in_features: width of the pooled features.
        num_classes: classes; 0 for no classifier.
        drop_rate: dropout on the features before the classifier (timm's ``drop_rate``).
        make_head: builds the classifier from ``(in_features, num_classes)``; ``nn.Linear`` by default.

    Example:
        >>> import torch
        >>> ClassifierHead(128, 10)(torch.zeros(4, 128)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        drop_rate: float = 0.0,
        make_head: Callable[[int, int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        check_rate("drop_rate", drop_rate)
        self.in_features = in_features
        self.num_classes = num_classes
        self.make_head = make_head or nn.Linear
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = self._build()

    def _build(self) -> nn.Module:
        return self.make_head(self.in_features, self.num_classes) if self.num_classes else nn.Identity()

    def reset(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialized one with ``num_classes`` outputs."""
        check_num_classes(num_classes)
        device = next((p.device for p in self.fc.parameters()), None)
        self.num_classes = num_classes
        self.fc = self._build()
        if device is not None:
            self.fc.to(device)

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


class TimmClassifierMixin:
    """The timm classifier interface (``forward_features`` / ``forward_head`` / ``get_classifier`` /
    ``reset_classifier``) for a model with a ``head`` of type :class:`ClassifierHead`."""

    head: ClassifierHead
    num_features: int

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "avg"):
            raise UserInputError(f"global_pool={global_pool!r} is not supported; only 'avg' is")
        self.head.reset(num_classes)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x.mean(dim=(2, 3)), pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))  # type: ignore[attr-defined]
