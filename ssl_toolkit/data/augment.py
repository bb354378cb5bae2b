"""Batched augmentation on the training device: translate with reflect padding, flip, input noise."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AugmentConfig:
    """Random translation by up to ``translate`` pixels (reflect padding), optional horizontal flip,
    and Gaussian noise of std ``noise`` added to the normalized input (Mean Teacher paper, Sec. 4)."""

    translate: int = 2
    flip: bool = False
    noise: float = 0.15


class Normalizer:
    """Per-channel standardization with statistics from the training images."""

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        self.mean = mean.reshape(1, -1, 1, 1).float()
        self.std = std.reshape(1, -1, 1, 1).float().clamp(min=1e-6)

    @classmethod
    def fit(cls, images_uint8: Tensor) -> Normalizer:
        x = images_uint8.float() / 255.0
        return cls(x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)))

    def to(self, device: torch.device) -> Normalizer:
        return Normalizer(self.mean.to(device), self.std.to(device))

    def __call__(self, images_uint8: Tensor) -> Tensor:
        return (images_uint8.float() / 255.0 - self.mean) / self.std


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


class BatchAugmenter:
    """Turns a batch of uint8 images into one randomly augmented, normalized float view.

    Call it twice for the student's and the teacher's independent views. All randomness comes from
    ``generator``, whose state is saved in checkpoints.
    """

    def __init__(self, normalizer: Normalizer, config: AugmentConfig, generator: torch.Generator) -> None:
        self.normalizer = normalizer
        self.config = config
        self.generator = generator

    def __call__(self, images_uint8: Tensor) -> Tensor:
        x = self.normalizer(images_uint8)
        x = random_translate(x, self.config.translate, self.generator)
        if self.config.flip:
            x = random_flip(x, self.generator)
        if self.config.noise > 0:
            noise = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
            x = x + self.config.noise * noise
        return x
