"""RandAugment + Cutout: seeded and resumable, per-image ops, and each op checked against a hand derivation."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_toolkit.data.randaugment import RANDAUGMENT_OPS, _apply_slot, _cutout, _draw, rand_augment

MAGNITUDE_FREE = {"AutoContrast", "Equalize"}


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def seeded(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def apply_op(x: torch.Tensor, name: str, signed_magnitude: float) -> torch.Tensor:
    """The named op on every image of x, at one signed magnitude in [-1, 1]."""
    b = x.shape[0]
    op_ids = torch.full((b,), RANDAUGMENT_OPS.index(name), device=x.device)
    return _apply_slot(x, op_ids, torch.full((b,), signed_magnitude, dtype=x.dtype, device=x.device))


def test_op_pool_is_fixmatchs_fourteen_ops():
    assert len(set(RANDAUGMENT_OPS)) == len(RANDAUGMENT_OPS) == 14
    assert set(RANDAUGMENT_OPS) == {
        "Identity", "AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Posterize",
        "Rotate", "Sharpness", "ShearX", "ShearY", "Solarize", "TranslateX", "TranslateY",
    }  # fmt: skip


def test_same_seed_gives_identical_output_and_different_seeds_do_not():
    x = images(8, 3, 16, 16)
    first = rand_augment(x, seeded(1))
    assert torch.equal(first, rand_augment(x, seeded(1)))
    assert not torch.equal(first, rand_augment(x, seeded(2)))


def test_generator_state_after_call_does_not_depend_on_image_content():
    # Constant, black and random batches take different data-dependent paths (e.g. in Equalize/AutoContrast).
    states = []
    for x in (images(6, 3, 12, 10), torch.zeros(6, 3, 12, 10), torch.full((6, 3, 12, 10), 0.7)):
        generator = seeded(3)
        rand_augment(x, generator, num_ops=3, magnitude_max=0.8, cutout=0.4)
        states.append(generator.get_state())
    assert all(torch.equal(states[0], state) for state in states[1:])
    assert not torch.equal(states[0], seeded(3).get_state())


def test_each_image_in_a_batch_of_identical_images_gets_its_own_ops():
    x = images(1, 3, 16, 16).expand(32, -1, -1, -1).contiguous()
    out = rand_augment(x, seeded(0), cutout=0.0)
    distinct = {tuple(img.flatten().tolist()) for img in out}
    assert len(distinct) >= 24


def test_ops_are_drawn_per_image_and_uniformly_from_the_pool():
    # At magnitude 0 only AutoContrast and Equalize change an image, so each output shows which op it drew.
    x = images(1, 3, 16, 16).expand(700, -1, -1, -1).contiguous()
    out = rand_augment(x, seeded(0), num_ops=1, magnitude_max=0.0, cutout=0.0)
    counts = {
        name: int((out - apply_op(x, name, 0.0)).flatten(1).abs().amax(dim=1).lt(1e-6).sum())
        for name in ("Identity", "AutoContrast", "Equalize")
    }
    assert sum(counts.values()) == 700
    assert 25 <= counts["AutoContrast"] <= 75 and 25 <= counts["Equalize"] <= 75  # 50 expected for 1 op in 14


def test_each_slot_draws_its_op_independently():
    # With two slots at magnitude 0, an image shows AutoContrast then Equalize (or the reverse) only if its two
    # slots drew different ops.
    x = images(1, 3, 16, 16).expand(1400, -1, -1, -1).contiguous()
    out = rand_augment(x, seeded(0), num_ops=2, magnitude_max=0.0, cutout=0.0)
    mixed = [
        apply_op(apply_op(x[:1], a, 0.0), b, 0.0)
        for a, b in [("AutoContrast", "Equalize"), ("Equalize", "AutoContrast")]
    ]
    hits = sum((out - m).flatten(1).abs().amax(dim=1).lt(1e-6).sum() for m in mixed)
    assert 4 <= hits <= 40  # 1400 * 2 / 14**2 = 14 expected


def test_the_random_sign_makes_brightness_darken_some_images_and_brighten_others():
    # On a flat 0.4 image every op but Brightness and Solarize (0.6) leaves it flat and no darker than 0.37.
    out = rand_augment(torch.full((500, 1, 8, 8), 0.4), seeded(0), num_ops=1, cutout=0.0)
    flat = out.flatten(1).amax(dim=1) - out.flatten(1).amin(dim=1) < 1e-6
    level = out.flatten(1)[:, 0]
    darker = flat & (level < 0.37)
    brighter = flat & (level > 0.41) & ((level - 0.6).abs() > 1e-6)
    assert darker.sum() >= 5 and brighter.sum() >= 5


def test_each_image_and_slot_draws_its_own_op_and_signed_magnitude():
    op_ids, signed, cutout_uniforms = _draw(seeded(0), 3, 2000, 0.6, torch.device("cpu"))
    assert op_ids.shape == signed.shape == (3, 2000) and cutout_uniforms.shape == (3, 2000)
    assert torch.equal(torch.bincount(op_ids.flatten(), minlength=14) > 300, torch.ones(14, dtype=torch.bool))
    assert signed.abs().max() <= 0.6 and signed.abs().max() > 0.59
    for slot in range(3):
        assert (signed[slot] > 0.1).sum() > 700 and (signed[slot] < -0.1).sum() > 700
    assert not torch.equal(op_ids[0], op_ids[1]) and not torch.equal(signed[0].abs(), signed[1].abs())


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_output_keeps_shape_dtype_device_and_stays_in_unit_range(channels, dtype):
    x = images(16, channels, 12, 9).to(dtype)
    before = x.clone()
    out = rand_augment(x, seeded(0), num_ops=3)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(x, before)  # the input is left alone


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_ops_and_no_cutout_returns_an_equal_but_new_tensor(dtype):
    x = images(4, 3, 8, 8).to(dtype) / 3
    out = rand_augment(x, seeded(0), num_ops=0, cutout=0.0)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("bad", [dict(num_ops=-1), dict(magnitude_max=1.5), dict(magnitude_max=-0.1), dict(cutout=2.0)])
def test_out_of_range_arguments_are_rejected(bad):
    with pytest.raises(ValueError):
        rand_augment(images(2, 3, 8, 8), seeded(0), **bad)


@pytest.mark.parametrize("shape", [(3, 8, 8), (2, 2, 8, 8), (2, 4, 8, 8)])
def test_images_that_are_not_b_1or3_h_w_are_rejected(shape):
    with pytest.raises(ValueError):
        rand_augment(torch.rand(shape), seeded(0))


def test_integer_images_are_rejected():
    with pytest.raises(ValueError):
        rand_augment(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), seeded(0))


@pytest.mark.parametrize("name", [op for op in RANDAUGMENT_OPS if op not in MAGNITUDE_FREE])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_op_with_a_magnitude_is_the_identity_at_magnitude_zero(name, channels):
    x = images(4, channels, 10, 14)
    torch.testing.assert_close(apply_op(x, name, 0.0), x, atol=1e-6, rtol=0)


def test_solarize_inverts_only_pixels_above_one_minus_magnitude():
    x = torch.tensor([0.1, 0.4, 0.5, 0.6, 0.9, 1.0]).reshape(1, 1, 2, 3)
    expected = torch.tensor([0.1, 0.4, 0.5, 0.4, 0.1, 0.0]).reshape(1, 1, 2, 3)
    torch.testing.assert_close(apply_op(x, "Solarize", 0.5), expected)
    torch.testing.assert_close(apply_op(x, "Solarize", -0.5), expected)  # the sign plays no part
    assert torch.equal(apply_op(x, "Solarize", 0.0), x)  # white stays white at magnitude 0


def test_posterize_at_full_magnitude_keeps_the_top_four_bits():
    levels = torch.tensor([0, 15, 16, 17, 200, 255])
    x = (levels / 255.0).reshape(1, 1, 2, 3)
    expected = (torch.tensor([0, 0, 16, 16, 192, 240]) / 255.0).reshape(1, 1, 2, 3)
    torch.testing.assert_close(apply_op(x, "Posterize", 1.0), expected)


def test_posterize_rounds_the_number_of_dropped_bits():
    x = (torch.tensor([0, 3, 4, 255]) / 255.0).reshape(1, 1, 2, 2)
    expected = (torch.tensor([0, 0, 4, 252]) / 255.0).reshape(1, 1, 2, 2)
    torch.testing.assert_close(apply_op(x, "Posterize", 0.4), expected)  # round(1.6) = 2 bits dropped
    assert torch.equal(apply_op(x, "Posterize", 0.1), x)  # round(0.4) = 0: all 8 bits kept


def test_identity_returns_the_image():
    x = images(3, 3, 7, 7)
    assert torch.equal(apply_op(x, "Identity", 1.0), x)


def test_brightness_scales_by_one_plus_point_95_times_signed_magnitude_and_clips():
    x = torch.tensor([0.2, 0.8]).reshape(1, 1, 1, 2)
    torch.testing.assert_close(apply_op(x, "Brightness", 0.5), torch.tensor([0.295, 1.0]).reshape(1, 1, 1, 2))
    torch.testing.assert_close(apply_op(x, "Brightness", -1.0), torch.tensor([0.01, 0.04]).reshape(1, 1, 1, 2))


def test_color_blends_with_the_luma_grey_and_is_the_identity_on_grayscale():
    red = torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1)
    grey = 0.299
    expected = torch.tensor([grey + 0.05 * (1 - grey), grey * 0.95, grey * 0.95]).reshape(1, 3, 1, 1)
    torch.testing.assert_close(apply_op(red, "Color", -1.0), expected)
    x = images(2, 1, 5, 5)
    torch.testing.assert_close(apply_op(x, "Color", 1.0), x)


def test_contrast_blends_with_the_mean_grey_level():
    x = torch.tensor([0.0, 1.0]).reshape(1, 1, 1, 2)
    torch.testing.assert_close(apply_op(x, "Contrast", -1.0), torch.tensor([0.475, 0.525]).reshape(1, 1, 1, 2))


def test_sharpness_blends_the_interior_with_pils_smooth_filter_and_keeps_the_border():
    x = torch.full((1, 1, 3, 3), 0.25)
    x[0, 0, 1, 1] = 0.5
    smooth = (8 * 0.25 + 5 * 0.5) / 13
    expected = x.clone()
    expected[0, 0, 1, 1] = smooth + 1.95 * (0.5 - smooth)
    torch.testing.assert_close(apply_op(x, "Sharpness", 1.0), expected)


def test_autocontrast_stretches_each_channel_to_the_full_range_and_leaves_flat_channels():
    spread = torch.tensor([[0.2, 0.4], [0.5, 0.6]])
    x = torch.stack([spread, torch.full((2, 2), 0.3), spread / 2]).unsqueeze(0)
    out = apply_op(x, "AutoContrast", 0.0)
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.0, 0.5], [0.75, 1.0]]))
    torch.testing.assert_close(out[0, 1], x[0, 1])
    torch.testing.assert_close(out[0, 2], torch.tensor([[0.0, 0.5], [0.75, 1.0]]))


def pil_equalize(levels: list[int]) -> list[int]:
    """PIL's ImageOps.equalize on one band of 8-bit levels, written out with Python lists."""
    hist = [levels.count(i) for i in range(256)]
    used = [h for h in hist if h]
    step = (sum(used) - used[-1]) // 255
    if step == 0:
        return levels
    lut, n = [], step // 2
    for count in hist:
        lut.append(min(255, n // step))
        n += count
    return [lut[v] for v in levels]


def test_equalize_matches_pils_algorithm_per_image_and_channel():
    generator = torch.Generator().manual_seed(5)
    levels = torch.randint(40, 120, (2, 3, 24, 24), generator=generator)
    levels[1, 2] = torch.randint(0, 256, (24, 24), generator=generator) // 37  # few levels, a different step
    levels[1, 1] = 77  # one level only: step 0, left as it is
    out = apply_op(levels / 255.0, "Equalize", 0.0)
    for b in range(2):
        for c in range(3):
            expected = torch.tensor(pil_equalize(levels[b, c].flatten().tolist())).reshape(24, 24) / 255.0
            torch.testing.assert_close(out[b, c], expected)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_translate_x_shifts_by_point_3_of_the_width_and_fills_grey(sign):
    x = images(2, 3, 6, 10)
    out = apply_op(x, "TranslateX", sign)
    if sign > 0:  # content moves right by 3 pixels
        torch.testing.assert_close(out[..., 3:], x[..., :7])
        torch.testing.assert_close(out[..., :3], torch.full_like(out[..., :3], 0.5))
    else:
        torch.testing.assert_close(out[..., :7], x[..., 3:])
        torch.testing.assert_close(out[..., 7:], torch.full_like(out[..., 7:], 0.5))


def test_translate_y_shifts_by_point_3_of_the_height_on_a_non_square_image():
    x = images(2, 1, 20, 7)
    out = apply_op(x, "TranslateY", 0.5)  # 0.15 * 20 = 3 pixels down
    torch.testing.assert_close(out[:, :, 3:], x[:, :, :17])
    torch.testing.assert_close(out[:, :, :3], torch.full_like(out[:, :, :3], 0.5))


def ramp(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An image linear in both axes (bilinear sampling reproduces it exactly) and its centred pixel coordinates."""
    cy, cx = (h - 1) / 2, (w - 1) / 2
    y = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w) - cy
    x = torch.arange(w, dtype=torch.float64)[None, :].expand(h, w) - cx
    return 0.3 + 0.01 * (x + cx) + 0.02 * (y + cy), y, x


def rotated(degrees: float):
    """Counter-clockwise on screen (y points down): output pixel (y, x) reads the input rotated back by the angle."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return lambda y, x: (s * x + c * y, c * x - s * y)


@pytest.mark.parametrize(
    "name, magnitude, source",
    [
        ("Rotate", 1.0, rotated(30.0)),
        ("Rotate", -0.5, rotated(-15.0)),
        ("ShearX", 1.0, lambda y, x: (y, x + 0.3 * y)),
        ("ShearY", -1.0, lambda y, x: (y - 0.3 * x, x)),
    ],
)
def test_rotate_and_shear_resample_a_linear_ramp_about_the_centre(name, magnitude, source):
    h, w = 13, 21
    image, y, x = ramp(h, w)
    out = apply_op(image.reshape(1, 1, h, w), name, magnitude)[0, 0]
    src_y, src_x = source(y, x)  # where each output pixel reads the input, in centred pixel units
    expected = 0.3 + 0.01 * (src_x + (w - 1) / 2) + 0.02 * (src_y + (h - 1) / 2)
    inside = (src_y.abs() <= (h - 1) / 2) & (src_x.abs() <= (w - 1) / 2)
    assert inside.sum() > h * w / 3
    torch.testing.assert_close(out[inside], expected[inside])
    assert (out[inside] - image[inside]).abs().max() > 0.01  # the op really moved the content


@pytest.mark.parametrize("channels", [1, 3])
def test_cutout_greys_one_square_per_image_and_leaves_the_rest(channels):
    x = 0.25 * images(64, channels, 20, 20)  # no pixel is 0.5, so every changed pixel is a cutout pixel
    out = rand_augment(x, seeded(0), num_ops=0, cutout=0.5)
    sizes, borders = set(), set()
    for img, src in zip(out, x, strict=True):
        changed = (img != src).any(dim=0)
        if not changed.any():
            continue
        rows, cols = changed.any(dim=1).nonzero()[:, 0], changed.any(dim=0).nonzero()[:, 0]
        top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
        box = torch.zeros_like(changed)
        box[top : bottom + 1, left : right + 1] = True
        assert torch.equal(changed, box)  # one filled rectangle
        assert (img[:, box] == 0.5).all()
        height, width = int(bottom - top + 1), int(right - left + 1)
        assert max(height, width) <= 10  # round(0.5 * 20)
        if top > 0 and left > 0 and bottom < 19 and right < 19:
            assert height == width  # a square unless clipped by the border
        sizes.add((height, width))
        borders |= {
            name for name, hit in zip("TBLR", (top == 0, bottom == 19, left == 0, right == 19), strict=True) if hit
        }
    assert len(sizes) >= 5
    assert borders == set("TBLR")  # centres are uniform over the image, so squares hang over every border


def test_cutout_square_is_centred_on_its_pixel_and_clipped_at_the_border():
    x = torch.zeros(3, 1, 10, 10)
    side, cy, cx = torch.tensor([4, 5, 0]), torch.tensor([5, 0, 5]), torch.tensor([5, 9, 5])
    out = _cutout(x, side, cy, cx)
    expected = torch.zeros_like(x)
    expected[0, :, 3:7, 3:7] = 0.5  # rows/cols 5 - 4 // 2 .. + 4
    expected[1, :, 0:3, 7:10] = 0.5  # rows -2..2 and cols 7..11, clipped
    assert torch.equal(out, expected)


def test_cutout_side_and_centre_follow_the_drawn_uniforms():
    x = images(50, 3, 12, 16)
    _, _, (size_u, centre_y, centre_x) = _draw(seeded(4), 0, 50, 1.0, torch.device("cpu"))
    side = torch.round(0.5 * 12 * (1 - size_u)).long()
    expected = _cutout(x, side, (centre_y * 12).floor().long(), (centre_x * 16).floor().long())
    assert torch.equal(rand_augment(x, seeded(4), num_ops=0, cutout=0.5), expected)


def test_cutout_zero_leaves_the_images_unchanged():
    x = images(8, 3, 12, 12)
    assert torch.equal(rand_augment(x, seeded(0), num_ops=0, cutout=0.0), x)


def test_512_mnist_sized_images_go_through_in_one_call():
    x = images(512, 1, 28, 28)
    out = rand_augment(x, seeded(0))
    assert out.shape == (512, 1, 28, 28) and torch.isfinite(out).all()
    assert (out != x).flatten(1).any(dim=1).float().mean() > 0.9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_is_seeded_and_each_op_matches_cpu():
    x = images(64, 3, 32, 32)
    on_gpu = x.cuda()
    out = rand_augment(on_gpu, seeded(0, "cuda"))
    assert out.device == on_gpu.device and out.dtype == x.dtype
    assert torch.equal(out, rand_augment(on_gpu, seeded(0, "cuda")))
    assert rand_augment(on_gpu.bfloat16(), seeded(0, "cuda")).dtype == torch.bfloat16
    for name in RANDAUGMENT_OPS:
        torch.testing.assert_close(apply_op(on_gpu, name, 0.7).cpu(), apply_op(x, name, 0.7), atol=1e-5, rtol=0)
