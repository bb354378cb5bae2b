"""ZCA whitening of input images, as the Mean Teacher paper's CIFAR-10 ConvNet runs use it.

The original TensorFlow code (CuriousAI/mean-teacher, ``tensorflow/datasets/preprocess_cifar10.py``)
first applies global contrast normalization to each flattened image (subtract the image's mean,
scale its L2 norm to 55), then whitens with ``W = E diag(d)^-1/2 E^T`` where ``E, d`` are the
eigenvectors and eigenvalues of ``cov + 0.1 I``; ``cov`` is the unbiased (N - 1) covariance of the
normalized training images. Oliver et al. (brain-research/realistic-ssl-evaluation,
``lib/dataset_utils.py``) use the same recipe. :class:`ZCAWhitener` computes exactly that, in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ssl_toolkit.errors import UserInputError

# The original code's constants: Goodfellow's contrast scale and the regularizer added to the covariance.
GCN_SCALE = 55.0
ZCA_EPSILON = 0.1
# An image whose centred L2 norm is below this is left unscaled (the original's ``min_divisor``).
_GCN_MIN_NORM = 1e-8
# Eigenvalues of cov + epsilon I at or below this fraction of the largest make W numerically meaningless.
_MIN_RELATIVE_EIGENVALUE = 1e-10


def global_contrast_normalize(flat: Tensor, scale: float = GCN_SCALE) -> Tensor:
    """Per image (rows of ``flat``): subtract its mean, then scale its L2 norm to ``scale``.

    Images whose centred norm is below 1e-8 (constant images) are only centred, as in the original.
    """
    centred = flat - flat.mean(dim=1, keepdim=True)
    norms = centred.pow(2).sum(dim=1, keepdim=True).sqrt() / scale
    norms = torch.where(norms < _GCN_MIN_NORM, torch.ones_like(norms), norms)
    return centred / norms


def _as_tensor(images: Tensor | np.ndarray, what: str) -> Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, Tensor):
        raise UserInputError(f"{what}: expected a tensor or numpy array of images, got {type(images).__name__}")
    if images.dim() != 4:
        raise UserInputError(f"{what}: expected images shaped (N, C, H, W), got shape {tuple(images.shape)}")
    if images.dtype == torch.bool or images.is_complex():
        raise UserInputError(f"{what}: expected uint8 or floating-point pixels, got dtype {images.dtype}")
    return images


class ZCAWhitener:
    """Global contrast normalization followed by ZCA whitening, fit once on the training images.

    ``whitener(x)`` maps a batch shaped ``(B, C, H, W)`` (uint8 or float, in the same units as the
    images it was fit on) to float32 ``(B, C, H, W)``: ``(gcn(flat(x)) - mean) @ W``. It has the
    same call and ``to(device)`` interface as :class:`ssl_toolkit.data.augment.Normalizer`, so it
    can stand in for it. ``state_dict()`` holds everything needed to rebuild it.

    Args:
        mean: mean of the (contrast-normalized) flattened training images, shape ``(D,)``.
        matrix: the symmetric whitening matrix ``W``, shape ``(D, D)``.
        image_shape: ``(C, H, W)`` of the images, ``C * H * W == D``.
        epsilon: the regularizer that was added to the covariance (kept for the record).
        gcn_scale: the contrast-normalization scale, or None when no contrast normalization is done
            (then the map is affine in the pixels).

    References:
        Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017 (ZCA on CIFAR-10);
        Goodfellow et al., "Maxout networks", ICML 2013 (GCN scale 55, ZCA regularizer 0.1).

    Example:
        >>> images = torch.randint(0, 256, (200, 1, 3, 3), dtype=torch.uint8)
        >>> whitener = ZCAWhitener.fit(images, gcn_scale=None)
        >>> whitener(images[:4]).shape
        torch.Size([4, 1, 3, 3])
    """

    def __init__(
        self,
        mean: Tensor,
        matrix: Tensor,
        image_shape: tuple[int, int, int],
        epsilon: float,
        gcn_scale: float | None,
    ) -> None:
        dim = int(np.prod(image_shape))
        if mean.shape != (dim,) or matrix.shape != (dim, dim):
            raise UserInputError(
                f"ZCA state does not fit images of shape {tuple(image_shape)}: mean {tuple(mean.shape)}, "
                f"matrix {tuple(matrix.shape)}; expected ({dim},) and ({dim}, {dim})"
            )
        self.mean = mean.to(torch.float64)
        self.matrix = matrix.to(torch.float64)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.epsilon = float(epsilon)
        self.gcn_scale = None if gcn_scale is None else float(gcn_scale)
        # Whitening runs on every training batch, so apply in float32; the float64 originals are the state.
        self._mean32 = self.mean.to(torch.float32)
        self._matrix32 = self.matrix.to(torch.float32)

    @classmethod
    def fit(
        cls,
        images: Tensor | np.ndarray,
        epsilon: float = ZCA_EPSILON,
        gcn_scale: float | None = GCN_SCALE,
        chunk_size: int = 2048,
    ) -> ZCAWhitener:
        """Fit on training images ``(N, C, H, W)`` (uint8 as read from the data set files).

        The covariance is accumulated in float64 over chunks of ``chunk_size`` images on the images'
        device, so a whole CIFAR-10 training set needs only the (D, D) matrix in memory at once.
        """
        images = _as_tensor(images, "ZCA fit")
        if not (isinstance(epsilon, (int, float)) and np.isfinite(epsilon) and epsilon >= 0):
            raise UserInputError(f"ZCA epsilon={epsilon!r} is not valid; use a finite number >= 0 (the paper's 0.1)")
        if gcn_scale is not None and not (
            isinstance(gcn_scale, (int, float)) and np.isfinite(gcn_scale) and gcn_scale > 0
        ):
            raise UserInputError(f"ZCA gcn_scale={gcn_scale!r} is not valid; use a positive number (55) or None")
        if chunk_size < 1:
            raise UserInputError(f"ZCA chunk_size={chunk_size!r} is not valid; use a positive integer")
        n = images.shape[0]
        if n < 2:
            raise UserInputError(f"ZCA fit needs at least 2 images to estimate a covariance, got {n}")
        dim = int(np.prod(images.shape[1:]))

        def prepared(start: int) -> Tensor:
            flat = images[start : start + chunk_size].reshape(-1, dim).to(torch.float64)
            return flat if gcn_scale is None else global_contrast_normalize(flat, gcn_scale)

        # Two passes (mean, then centred products) keep the covariance accurate in float64.
        total = torch.zeros(dim, dtype=torch.float64, device=images.device)
        for start in range(0, n, chunk_size):
            total += prepared(start).sum(dim=0)
        mean = total / n
        products = torch.zeros(dim, dim, dtype=torch.float64, device=images.device)
        for start in range(0, n, chunk_size):
            centred = prepared(start) - mean
            products += centred.T @ centred
        covariance = products / (n - 1)

        regularized = covariance + epsilon * torch.eye(dim, dtype=torch.float64, device=images.device)
        eigenvalues, eigenvectors = torch.linalg.eigh(regularized)
        largest = float(eigenvalues.max())
        if not float(eigenvalues.min()) > _MIN_RELATIVE_EIGENVALUE * max(largest, 1e-300):
            raise UserInputError(
                f"ZCA epsilon={epsilon} leaves the covariance singular (smallest eigenvalue "
                f"{float(eigenvalues.min()):.3g}, largest {largest:.3g}); use a larger epsilon such as 0.1"
            )
        matrix = (eigenvectors * eigenvalues.rsqrt()) @ eigenvectors.T
        # eigh's W is symmetric only up to rounding; make it exactly so, as the map is defined.
        matrix = 0.5 * (matrix + matrix.T)
        return cls(mean, matrix, tuple(images.shape[1:]), epsilon, gcn_scale)

    def __call__(self, x: Tensor) -> Tensor:
        """Whiten a batch ``(B, C, H, W)``; returns float32 of the same shape on ``x``'s device."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise UserInputError(
                f"ZCA whitener was fit on images of shape {self.image_shape}; got a batch of shape "
                f"{tuple(x.shape)}, expected (B, {', '.join(map(str, self.image_shape))})"
            )
        flat = x.reshape(x.shape[0], -1).to(torch.float32)
        if self.gcn_scale is not None:
            flat = global_contrast_normalize(flat, self.gcn_scale)
        return ((flat - self._mean32) @ self._matrix32).reshape(x.shape)

    def to(self, device: torch.device | str) -> ZCAWhitener:
        """A copy whose tensors live on ``device``."""
        return ZCAWhitener(self.mean.to(device), self.matrix.to(device), self.image_shape, self.epsilon, self.gcn_scale)

    def state_dict(self) -> dict[str, Any]:
        """Tensors (and the two scalars) that :meth:`from_state_dict` rebuilds the whitener from."""
        return {
            "kind": "zca",
            "mean": self.mean.detach().cpu().clone(),
            "matrix": self.matrix.detach().cpu().clone(),
            "image_shape": torch.tensor(self.image_shape, dtype=torch.int64),
            "epsilon": torch.tensor(self.epsilon, dtype=torch.float64),
            "gcn_scale": torch.tensor(float("nan") if self.gcn_scale is None else self.gcn_scale, dtype=torch.float64),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ZCAWhitener:
        """Rebuild a whitener saved with :meth:`state_dict` (e.g. from a checkpoint)."""
        missing = sorted({"mean", "matrix", "image_shape", "epsilon", "gcn_scale"} - set(state))
        if missing:
            raise UserInputError(f"ZCA state is missing {', '.join(missing)}; it must come from state_dict()")
        gcn_scale = float(state["gcn_scale"])
        shape = tuple(int(s) for s in state["image_shape"].tolist())
        if len(shape) != 3:
            raise UserInputError(f"ZCA state image_shape={shape} is not valid; expected (C, H, W)")
        return cls(
            state["mean"], state["matrix"], shape, float(state["epsilon"]), None if np.isnan(gcn_scale) else gcn_scale
        )
