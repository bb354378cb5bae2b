"""ZCA whitening: the original code's recipe (GCN scale 55, cov + 0.1 I), checked with numpy."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from ssl_toolkit.data.zca import ZCAWhitener, global_contrast_normalize
from ssl_toolkit.errors import UserInputError


def correlated_images(n: int = 500, shape: tuple[int, int, int] = (3, 4, 4), seed: int = 0) -> np.ndarray:
    """uint8 images whose 48 pixels are strongly correlated (a random mixing of Gaussian sources)."""
    rng = np.random.default_rng(seed)
    dim = int(np.prod(shape))
    mixing = rng.normal(size=(dim, dim)) + 2.0  # a shared component correlates every pixel pair
    sources = rng.normal(size=(n, dim))
    pixels = 128.0 + 4.0 * sources @ mixing / np.sqrt(dim)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8).reshape(n, *shape)


def numpy_gcn(flat: np.ndarray, scale: float = 55.0) -> np.ndarray:
    centred = flat - flat.mean(axis=1, keepdims=True)
    return centred / (np.sqrt((centred**2).sum(axis=1, keepdims=True)) / scale)


def test_whitened_training_images_have_identity_covariance():
    images = correlated_images()
    flat = images.reshape(len(images), -1).astype(np.float64)
    assert np.abs(np.corrcoef(flat, rowvar=False)[np.triu_indices(48, 1)]).mean() > 0.3  # really correlated

    whitener = ZCAWhitener.fit(images, epsilon=1e-8, gcn_scale=None)
    white = whitener(torch.from_numpy(images)).double().reshape(len(images), -1).numpy()

    np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(48), atol=1e-3)
    np.testing.assert_allclose(white.mean(axis=0), np.zeros(48), atol=1e-3)


def test_epsilon_is_added_to_the_unbiased_covariance_after_contrast_normalization():
    # The original: W = (cov + eps I)^-1/2 with cov = np.cov(gcn(x)), so the whitened covariance is
    # cov (cov + eps I)^-1, not the identity, and GCN leaves the all-ones direction with variance 0.
    images = correlated_images(seed=1)
    gcn = numpy_gcn(images.reshape(len(images), -1).astype(np.float64))
    covariance = np.cov(gcn, rowvar=False)
    expected = covariance @ np.linalg.inv(covariance + 0.1 * np.eye(48))

    whitener = ZCAWhitener.fit(images)  # the paper's defaults: GCN scale 55, epsilon 0.1
    white = whitener(torch.from_numpy(images)).double().reshape(len(images), -1).numpy()

    np.testing.assert_allclose(np.cov(white, rowvar=False), expected, atol=2e-4)
    np.testing.assert_allclose(whitener.mean.numpy(), gcn.mean(axis=0), atol=1e-10)
    eigenvalues, vectors = np.linalg.eigh(covariance + 0.1 * np.eye(48))
    np.testing.assert_allclose(whitener.matrix.numpy(), (vectors / np.sqrt(eigenvalues)) @ vectors.T, atol=1e-9)


def test_global_contrast_normalization_centres_each_image_and_scales_its_norm_to_55():
    flat = torch.tensor([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]], dtype=torch.float64)
    out = global_contrast_normalize(flat)
    assert out[0].sum().abs() < 1e-12
    assert torch.isclose(out[0].norm(), torch.tensor(55.0, dtype=torch.float64))
    assert torch.equal(out[1], torch.zeros(4, dtype=torch.float64))  # a constant image is only centred


def test_fitting_twice_gives_the_same_whitener_and_outputs():
    images = torch.from_numpy(correlated_images(seed=2))
    first, second = ZCAWhitener.fit(images), ZCAWhitener.fit(images)
    assert torch.equal(first.mean, second.mean)
    assert torch.equal(first.matrix, second.matrix)
    assert torch.equal(first(images[:7]), second(images[:7]))
    assert torch.equal(first(images[:7]), first(images[:7]))


def test_chunked_covariance_equals_single_pass():
    images = torch.from_numpy(correlated_images(seed=3))
    whole = ZCAWhitener.fit(images, chunk_size=len(images))
    chunked = ZCAWhitener.fit(images, chunk_size=37)
    torch.testing.assert_close(chunked.matrix, whole.matrix, rtol=0, atol=1e-10)


def test_without_contrast_normalization_whitening_is_a_fixed_affine_map():
    images = correlated_images(seed=4)
    whitener = ZCAWhitener.fit(images, gcn_scale=None)
    rng = np.random.default_rng(5)
    a = torch.from_numpy(rng.uniform(0, 127, size=(6, 3, 4, 4)).astype(np.float32))
    b = torch.from_numpy(rng.uniform(0, 127, size=(6, 3, 4, 4)).astype(np.float32))
    zero = torch.zeros_like(a)

    # f(a + b) = f(a) + f(b) - f(0) for an affine f
    torch.testing.assert_close(whitener(a + b), whitener(a) + whitener(b) - whitener(zero), atol=1e-3, rtol=0)
    # ... and it is exactly (x - mean) W with a symmetric W, whatever else is in the batch.
    expected = (a.reshape(6, -1).double() - whitener.mean) @ whitener.matrix
    torch.testing.assert_close(whitener(a).double().reshape(6, -1), expected, atol=1e-3, rtol=0)
    assert torch.equal(whitener.matrix, whitener.matrix.T)
    torch.testing.assert_close(whitener(a[:1]), whitener(a)[:1])


def test_contrast_normalization_makes_the_output_independent_of_image_contrast():
    images = torch.from_numpy(correlated_images(seed=6))
    whitener = ZCAWhitener.fit(images)
    batch = images[:5].float()
    torch.testing.assert_close(whitener(batch * 0.5 + 3.0), whitener(batch), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(whitener(images[:5]), whitener(batch))  # uint8 and float: same units


def test_state_dict_round_trip_through_torch_save_gives_the_same_outputs():
    images = torch.from_numpy(correlated_images(seed=7))
    for gcn_scale in (55.0, None):
        whitener = ZCAWhitener.fit(images, gcn_scale=gcn_scale)
        buffer = io.BytesIO()
        torch.save(whitener.state_dict(), buffer)
        buffer.seek(0)
        restored = ZCAWhitener.from_state_dict(torch.load(buffer, weights_only=True))
        assert restored.gcn_scale == gcn_scale and restored.epsilon == 0.1
        assert restored.image_shape == (3, 4, 4)
        assert torch.equal(restored(images[:3]), whitener(images[:3]))
        moved = whitener.to("cpu")
        assert torch.equal(moved(images[:3]), whitener(images[:3]))


def test_bad_input_is_rejected_with_the_bad_value_named():
    images = torch.from_numpy(correlated_images(n=20))
    with pytest.raises(UserInputError, match=r"\(N, C, H, W\).*\(20, 48\)"):
        ZCAWhitener.fit(images.reshape(20, 48))
    with pytest.raises(UserInputError, match="epsilon=-1"):
        ZCAWhitener.fit(images, epsilon=-1)
    with pytest.raises(UserInputError, match="at least 2 images"):
        ZCAWhitener.fit(images[:1])
    with pytest.raises(UserInputError, match="epsilon=0 leaves the covariance singular"):
        ZCAWhitener.fit(images, epsilon=0)  # GCN removes a dimension: singular without epsilon
    whitener = ZCAWhitener.fit(images)
    with pytest.raises(UserInputError, match=r"shape \(3, 4, 4\).*\(2, 3, 5, 5\)"):
        whitener(torch.zeros(2, 3, 5, 5))
    with pytest.raises(UserInputError, match="missing matrix"):
        ZCAWhitener.from_state_dict({k: v for k, v in whitener.state_dict().items() if k != "matrix"})
