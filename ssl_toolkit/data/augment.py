"""Batched augmentation on the training device, and the registry of view policies.

A policy turns a batch of uint8 images into one randomly augmented, normalized float view. An
algorithm declares which views it needs and from which policy (``SSLAlgorithm.views``); the
:class:`ViewBuilder` makes exactly those, in the declared order, from the one generator whose
state is checkpointed, so every algorithm resumes bit-exact without drawing random numbers itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_toolkit.data.randaugment import rand_augment
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.naming import closest


@dataclass(frozen=True)
class AugmentConfig:
    """Random translation by up to ``translate`` pixels (reflect padding), optional horizontal flip,
    and Gaussian noise of std ``noise`` added to the normalized input (Mean Teacher paper, Sec. 4)."""

    translate: int = 2
    flip: bool = False
    noise: float = 0.15


class Normalizer:
    """Per-channel standardization with statistics from the training images.

    Called on uint8 images (0..255) or on float images in [0, 1].
    """

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        self.mean = mean.reshape(1, -1, 1, 1).float()
        self.std = std.reshape(1, -1, 1, 1).float().clamp(min=1e-6)

    @classmethod
    def fit(cls, images_uint8: Tensor) -> Normalizer:
        x = images_uint8.float() / 255.0
        return cls(x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)))

    def to(self, device: torch.device) -> Normalizer:
        return Normalizer(self.mean.to(device), self.std.to(device))

    def __call__(self, images: Tensor) -> Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return (x - self.mean) / self.std

    def state_dict(self) -> dict[str, Any]:
        """The statistics, for a checkpoint or an export (:meth:`from_state_dict` reads them)."""
        return {"kind": "standardize", "mean": self.mean.flatten().cpu().clone(),
                "std": self.std.flatten().cpu().clone()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Normalizer:
        return cls(torch.as_tensor(state["mean"]), torch.as_tensor(state["std"]))


class Preprocess(Protocol):
    """What turns images into network inputs: :class:`Normalizer` or the ZCA whitener."""

    def __call__(self, images: Tensor) -> Tensor: ...

    def to(self, device: torch.device) -> Preprocess: ...


def random_translate(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Shift each image independently by up to ``max_shift`` pixels in x and y, reflecting at borders."""
    if max_shift == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="reflect")
    shifts = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator, device=x.device)
    rows = shifts[0].unsqueeze(1) + torch.arange(h, device=x.device)
    cols = shifts[1].unsqueeze(1) + torch.arange(w, device=x.device)
    batch_index = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indexing gathers each image's window: result is (B, H, W, C).
    windows = padded.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]]
    return windows.permute(0, 3, 1, 2).contiguous()


def random_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


Policy = Callable[[Tensor], Tensor]
PolicyFactory = Callable[[Preprocess, AugmentConfig, torch.Generator], Policy]
_POLICIES: dict[str, tuple[PolicyFactory, str]] = {}


def register_policy(name: str, description: str) -> Callable[[PolicyFactory], PolicyFactory]:
    """Register a view policy: a factory ``(preprocess, augment config, generator) -> policy``."""

    def decorate(factory: PolicyFactory) -> PolicyFactory:
        if name in _POLICIES:
            raise UserInputError(f"view policy {name!r} is already registered")
        _POLICIES[name] = (factory, description)
        return factory

    return decorate


def list_policies() -> dict[str, str]:
    """Registered view policies and what each does."""
    return {name: description for name, (_, description) in sorted(_POLICIES.items())}


def get_policy(name: str) -> PolicyFactory:
    if name not in _POLICIES:
        raise UserInputError(f"unknown view policy {name!r}{closest(name, _POLICIES)}; "
                             f"valid: {', '.join(sorted(_POLICIES))}")
    return _POLICIES[name][0]


@register_policy("weak", "the papers' augmentation: translate (reflect), optional flip, Gaussian input noise")
def weak_policy(preprocess: Preprocess, augment: AugmentConfig, generator: torch.Generator) -> Policy:
    def view(images: Tensor) -> Tensor:
        x = preprocess(images)
        x = random_translate(x, augment.translate, generator)
        if augment.flip:
            x = random_flip(x, generator)
        if augment.noise > 0:
            x = x + augment.noise * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x

    return view


@register_policy("strong", "FixMatch's strong augmentation: translate (reflect) and optional flip in pixel space, "
                           "then RandAugment (2 ops, random magnitudes) and Cutout; no noise")
def strong_policy(preprocess: Preprocess, augment: AugmentConfig, generator: torch.Generator) -> Policy:
    """Sohn et al. 2020's strong view: the weak view's flip and translation, then RandAugment and Cutout.

    The augmentation works on pixels in [0, 1] (:func:`ssl_toolkit.data.randaugment.rand_augment`);
    the result is rounded back to 8 bits, the grid the images came on and FixMatch's PIL pipeline
    works on, so that every preprocess (standardization, or ZCA fit on uint8 images) sees the units
    it was fit on. The generator advances by an amount fixed by the batch shape.
    """

    def view(images: Tensor) -> Tensor:
        x = images.float() / 255.0
        x = random_translate(x, augment.translate, generator)
        if augment.flip:
            x = random_flip(x, generator)
        x = rand_augment(x, generator)
        return preprocess((x * 255.0).round().to(torch.uint8))

    return view


class ViewBuilder:
    """Builds the views an algorithm declared (name -> policy), in the declared order.

    All randomness comes from ``generator``, whose state is saved in checkpoints.

    Example:
        >>> views = ViewBuilder({"student": "weak", "teacher": "weak"}, normalizer, AugmentConfig(), generator)
        >>> batch_views = views(images_uint8)     # {"student": ..., "teacher": ...}
    """

    def __init__(self, declared: dict[str, str], preprocess: Preprocess, augment: AugmentConfig,
                 generator: torch.Generator) -> None:
        self.policies = {name: get_policy(policy)(preprocess, augment, generator) for name, policy in declared.items()}

    def __call__(self, images_uint8: Tensor) -> dict[str, Tensor]:
        return {name: policy(images_uint8) for name, policy in self.policies.items()}
