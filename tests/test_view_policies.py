"""View policies: the weak view is unchanged, the strong view is FixMatch's, both seeded and resumable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_toolkit.data.augment import (
    AugmentConfig,
    Normalizer,
    ViewBuilder,
    list_policies,
    random_flip,
    random_translate,
)
from ssl_toolkit.data.randaugment import rand_augment
from ssl_toolkit.data.zca import ZCAWhitener

FLIP = AugmentConfig(translate=2, flip=True, noise=0.15)


def digit_like_images(count: int = 16, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, size=(count, 1, 12, 12), dtype=np.uint8))


def normalizer(images: torch.Tensor) -> Normalizer:
    return Normalizer.fit(images)


def generator(seed: int = 3) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def build(policy: str, images: torch.Tensor, gen: torch.Generator, preprocess=None, augment=FLIP) -> torch.Tensor:
    views = ViewBuilder({"view": policy}, preprocess or normalizer(images), augment, gen)
    return views(images)["view"]


def test_weak_and_strong_are_registered_with_descriptions():
    policies = list_policies()
    assert {"weak", "strong"} <= set(policies)
    assert "RandAugment" in policies["strong"] and "noise" in policies["weak"]


def test_weak_view_is_preprocess_then_translate_flip_noise_from_the_generator():
    # The recorded runs' views: any change to the weak policy's draws or order breaks their bit-exact reproduction.
    images = digit_like_images()
    preprocess = normalizer(images)
    got = build("weak", images, generator(), preprocess)
    gen = generator()
    x = random_flip(random_translate(preprocess(images), 2, gen), gen)
    expected = x + 0.15 * torch.randn(x.shape, generator=gen)
    assert torch.equal(got, expected)


def test_strong_view_is_flip_translate_randaugment_cutout_on_pixels_then_preprocess_without_noise():
    images = digit_like_images()
    preprocess = normalizer(images)
    got = build("strong", images, generator(), preprocess)
    gen = generator()
    x = random_flip(random_translate(images.float() / 255.0, 2, gen), gen)
    x = rand_augment(x, gen)
    assert torch.equal(got, preprocess((x * 255.0).round().to(torch.uint8)))


def test_strong_views_of_identical_images_differ_per_image():
    images = digit_like_images(1).repeat(16, 1, 1, 1)
    views = build("strong", images, generator(), normalizer(digit_like_images()))
    distinct = {views[i].numpy().tobytes() for i in range(len(views))}
    assert len(distinct) == len(views)


def test_strong_view_is_seeded_and_another_seed_differs():
    images = digit_like_images()
    assert torch.equal(build("strong", images, generator(5)), build("strong", images, generator(5)))
    assert not torch.equal(build("strong", images, generator(5)), build("strong", images, generator(6)))


@pytest.mark.parametrize("policy", ["weak", "strong"])
def test_generator_state_after_a_view_depends_only_on_the_batch_shape(policy):
    states = []
    for seed in (0, 1):
        gen = generator()
        build(policy, digit_like_images(seed=seed), gen)
        states.append(gen.get_state())
    assert torch.equal(states[0], states[1])


@pytest.mark.parametrize("zca", [False, True])
def test_strong_view_is_finite_float32_of_the_input_shape_under_either_preprocess(zca):
    images = digit_like_images(64)
    preprocess = ZCAWhitener.fit(images) if zca else normalizer(images)
    views = build("strong", images, generator(), preprocess)
    assert views.shape == images.shape and views.dtype == torch.float32
    assert bool(torch.isfinite(views).all())


def test_zca_after_contrast_normalization_sees_the_same_image_in_uint8_or_unit_floats():
    # Why the strong view may hand either unit to a ZCA preprocess: GCN removes the scale.
    images = digit_like_images(64)
    whitener = ZCAWhitener.fit(images)
    assert torch.allclose(whitener(images), whitener(images.float() / 255.0), atol=1e-4)
