"""Batched, seeded RandAugment with per-image random magnitude, followed by Cutout: FixMatch's strong view.

References: Cubuk et al. 2020, "RandAugment: Practical automated data augmentation with a reduced search
space"; Sohn et al. 2020, "FixMatch: Simplifying semi-supervised learning with consistency and confidence"
(the op list and ranges of its Table 12); DeVries & Taylor 2017, "Improved regularization of convolutional
neural networks with Cutout".

Every image draws its own ``num_ops`` ops uniformly with replacement from ``RANDAUGMENT_OPS``, each with its
own magnitude m ~ U[0, magnitude_max] and, where the op has a direction, its own random sign s = +-1. The ops
run on the whole batch at once on ``x.device``; an image keeps the result of the op it drew (torch.where).
Magnitude mapping (m = 0 is the identity for every op except AutoContrast and Equalize, which take none):

- Brightness, Color, Contrast, Sharpness: enhancement factor f = 1 + 0.95 * s * m, in [0.05, 1.95], blended
  as PIL's ImageEnhance does (against black, the grayscale image, the grayscale mean, the 3x3 smoothed image).
- Posterize: keep 8 - round(4m) bits, 8..4.           Solarize: invert pixels above 1 - m.
- Rotate: 30 * s * m degrees.  ShearX/ShearY: 0.3 * s * m.  TranslateX/TranslateY: 0.3 * s * m of the width/height.
- Cutout: one square per image of side round(cutout * min(H, W) * u), u ~ U(0, 1], centred on a uniformly drawn
  pixel (it may hang over the border), filled with grey 0.5.

Deviations from the papers and from FixMatch's PIL code, all deliberate:

- Magnitudes are random (FixMatch's variant) and drawn per image and per op, not Cubuk et al.'s single global M.
- The enhancement factors go both ways around 1 (Table 12 gives [0.05, 0.95]) so that m = 0 is the identity.
- No extra per-op apply-probability (some reimplementations apply each op with p = 0.5); Identity in the pool
  already lets an image skip a slot.
- Geometric ops act about the image centre (PIL shears about the top-left corner) with bilinear sampling (PIL's
  default is nearest), and fill the uncovered area with grey 0.5, Cutout's colour, rather than black or a
  reflection: it adds no extreme values and no mirrored structure.
- Pixels are floats in [0, 1]: Contrast blends with the unrounded grayscale mean, and only Posterize and Equalize
  quantize to 8 bits (they are defined on 256 levels). Color is the identity on grayscale (C = 1) images,
  and Sharpness on images smaller than 3x3.

Random draws depend only on the batch shape and the arguments, never on pixel values, so the generator state
after a call is a function of the state before it: this is what keeps checkpoint/resume bit-exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_toolkit.errors import UserInputError

RANDAUGMENT_OPS: tuple[str, ...] = (
    "Identity", "AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Posterize",
    "Rotate", "Sharpness", "ShearX", "ShearY", "Solarize", "TranslateX", "TranslateY",
)  # fmt: skip
_GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
_GREY = 0.5
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights of PIL's convert("L")


def _per_image(v: Tensor) -> Tensor:
    return v[:, None, None, None]


def _grayscale(x: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _blend(degenerate: Tensor, x: Tensor, factor: Tensor) -> Tensor:
    return (degenerate + _per_image(factor) * (x - degenerate)).clamp(0.0, 1.0)


def _sharpen_degenerate(x: Tensor) -> Tensor:
    # PIL's SMOOTH kernel (1s around a 5, over 13); as in PIL the one-pixel border keeps its values. Built from
    # avg_pool2d rather than conv2d so that cuDNN's TF32 cannot change the result on GPUs.
    if min(x.shape[-2:]) < 3:
        return x
    out = x.clone()
    out[..., 1:-1, 1:-1] = (9.0 * F.avg_pool2d(x, 3, stride=1) + 4.0 * x[..., 1:-1, 1:-1]) / 13.0
    return out


def _to_levels(x: Tensor) -> Tensor:
    return (x * 255.0).round().clamp(0, 255).long()


def _autocontrast(x: Tensor, v: Tensor) -> Tensor:
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    flat = hi <= lo  # a constant channel has no range to stretch
    scale = torch.where(flat, torch.ones_like(hi), 1.0 / (hi - lo).clamp(min=1e-12))
    return torch.where(flat, x, ((x - lo) * scale).clamp(0.0, 1.0))


def _equalize(x: Tensor, v: Tensor) -> Tensor:
    # PIL's ImageOps.equalize per image and channel; the cumulative histogram comes from searchsorted on the
    # sorted levels, which is batched and deterministic on every device (unlike scatter_add).
    b, c, h, w = x.shape
    levels = _to_levels(x).reshape(b * c, h * w)
    grid = torch.arange(256, device=x.device)
    cum = torch.searchsorted(levels.sort(dim=1).values, grid.expand(b * c, 256).contiguous(), right=True)
    hist = torch.diff(cum, dim=1, prepend=torch.zeros_like(cum[:, :1]))
    last = torch.where(hist > 0, grid, -1).amax(dim=1, keepdim=True)
    step = (h * w - hist.gather(1, last)) // 255
    lut = ((cum - hist + step // 2) // step.clamp(min=1)).clamp(max=255)
    out = (lut.gather(1, levels).to(x.dtype) / 255.0).reshape(b, c, h, w)
    return torch.where((step == 0).reshape(b, c, 1, 1), x, out)  # PIL leaves such images untouched


def _posterize(x: Tensor, v: Tensor) -> Tensor:
    drop = torch.round(4.0 * v.abs()).long()  # low bits cleared: 0..4, i.e. 8..4 bits kept
    div = _per_image(2**drop)
    out = torch.div(_to_levels(x), div, rounding_mode="floor") * div
    return torch.where(_per_image(drop == 0), x, out.to(x.dtype) / 255.0)


def _solarize(x: Tensor, v: Tensor) -> Tensor:
    return torch.where(x > _per_image(1.0 - v.abs()), 1.0 - x, x)


_COLOR_OPS = {
    "AutoContrast": _autocontrast,
    "Brightness": lambda x, v: _blend(torch.zeros_like(x), x, 1.0 + 0.95 * v),
    "Color": lambda x, v: _blend(_grayscale(x), x, 1.0 + 0.95 * v),
    "Contrast": lambda x, v: _blend(_grayscale(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x), x, 1.0 + 0.95 * v),
    "Equalize": _equalize,
    "Posterize": _posterize,
    "Sharpness": lambda x, v: _blend(_sharpen_degenerate(x), x, 1.0 + 0.95 * v),
    "Solarize": _solarize,
}


def _affine(x: Tensor, angle: Tensor, shear_x: Tensor, shear_y: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    """Resample each image under its own affine map about the centre, filling uncovered pixels with grey.

    In pixel units centred on the image, the output pixel p reads the input at A p - (tx * W, ty * H) with
    A = R(angle) @ [[1, shear_x], [shear_y, 1]]: positive translations move the content right/down and a
    positive angle (radians) turns it counter-clockwise on screen.
    """
    h, w = x.shape[-2:]
    cos, sin = torch.cos(angle), torch.sin(angle)
    a00, a01 = cos - sin * shear_y, cos * shear_x - sin
    a10, a11 = sin + cos * shear_y, sin * shear_x + cos
    # grid_sample reads [-1, 1] per axis, so the pixel-space map is rescaled by the aspect ratio. The grid is
    # built elementwise, not with affine_grid's matmul, so TF32 matmul settings cannot blur it.
    gx = ((torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1)[None, None, :]
    gy = ((torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1)[None, :, None]
    a00, a01, a10, a11, tx, ty = (t[:, None, None] for t in (a00, a01, a10, a11, tx, ty))
    grid = torch.stack([a00 * gx + a01 * (h / w) * gy - 2 * tx, a10 * (w / h) * gx + a11 * gy - 2 * ty], dim=-1)
    # Sampling x - grey with zero padding makes everything outside the image come back as grey.
    return F.grid_sample(x - _GREY, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + _GREY


def _apply_slot(x: Tensor, op_ids: Tensor, v: Tensor) -> Tensor:
    """Image i gets op RANDAUGMENT_OPS[op_ids[i]] with signed magnitude v[i] in [-1, 1]; x is float in [0, 1]."""
    # Every op runs on the whole batch and torch.where keeps the one each image drew: about ten ops' work per
    # slot, but no data-dependent shapes or host syncs, which matters more on a GPU.
    out = x
    for name, fn in _COLOR_OPS.items():
        out = torch.where(_per_image(op_ids == RANDAUGMENT_OPS.index(name)), fn(x, v), out)
    param = {name: torch.where(op_ids == RANDAUGMENT_OPS.index(name), v, 0.0) for name in _GEOMETRIC}
    moved = _affine(
        x, param["Rotate"] * math.radians(30.0), 0.3 * param["ShearX"], 0.3 * param["ShearY"],
        0.3 * param["TranslateX"], 0.3 * param["TranslateY"],
    )  # fmt: skip
    is_geometric = torch.isin(op_ids, torch.tensor([RANDAUGMENT_OPS.index(n) for n in _GEOMETRIC], device=x.device))
    return torch.where(_per_image(is_geometric), moved.clamp(0.0, 1.0), out)


def _cutout(x: Tensor, side: Tensor, centre_y: Tensor, centre_x: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    top, left = centre_y - side // 2, centre_x - side // 2
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + side)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + side)[:, None])
    return x.masked_fill(in_rows[:, None, :, None] & in_cols[:, None, None, :], _GREY)


def _draw(
    generator: torch.Generator, num_ops: int, b: int, magnitude_max: float, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Every random number of one call: op ids and signed magnitudes, both (num_ops, B), and (3, B) uniforms for
    the Cutout size and centre. Drawn up front in a fixed order and amount so the data never changes the advance."""
    op_ids = torch.randint(len(RANDAUGMENT_OPS), (num_ops, b), generator=generator, device=device)
    magnitudes = magnitude_max * torch.rand(num_ops, b, generator=generator, device=device)
    signs = torch.where(torch.rand(num_ops, b, generator=generator, device=device) < 0.5, -1.0, 1.0)
    return op_ids, signs * magnitudes, torch.rand(3, b, generator=generator, device=device)


def rand_augment(
    x: Tensor, generator: torch.Generator, num_ops: int = 2, magnitude_max: float = 1.0, cutout: float = 0.5
) -> Tensor:
    """Apply FixMatch's strong augmentation, RandAugment with random magnitude then Cutout, to a batch.

    Args:
        x: float images in [0, 1], shape (B, C, H, W) with C = 1 or 3, on any device; float16 and bfloat16
            are computed in float32.
        generator: the only source of randomness; must live on ``x.device``. It advances by an amount fixed by
            B, H, W and the arguments, whatever the pixel values.
        num_ops: ops per image, drawn uniformly with replacement from ``RANDAUGMENT_OPS``.
        magnitude_max: each op's magnitude is drawn per image from U[0, magnitude_max], magnitude_max in [0, 1].
        cutout: the largest Cutout side as a fraction of min(H, W), in [0, 1]; 0 disables Cutout.

    Returns:
        A new tensor with the shape, dtype and device of ``x``, with values in [0, 1].
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3) or not x.is_floating_point():
        raise UserInputError(
            f"rand_augment needs float images of shape (B, 1 or 3, H, W), got {x.dtype} {tuple(x.shape)}"
        )
    if num_ops < 0 or not 0.0 <= magnitude_max <= 1.0 or not 0.0 <= cutout <= 1.0:
        raise UserInputError(
            f"rand_augment needs num_ops >= 0 and magnitude_max, cutout in [0, 1]; "
            f"got num_ops={num_ops}, magnitude_max={magnitude_max}, cutout={cutout}"
        )
    b, _, h, w = x.shape
    op_ids, signed_magnitudes, (size_u, centre_y, centre_x) = _draw(generator, num_ops, b, magnitude_max, x.device)
    out = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32, copy=True)
    for slot in range(num_ops):
        out = _apply_slot(out, op_ids[slot], signed_magnitudes[slot].to(out.dtype))
    if cutout > 0:
        side = torch.round(cutout * min(h, w) * (1.0 - size_u)).long()  # 1 - U[0, 1) is U(0, 1]
        out = _cutout(out, side, (centre_y * h).long().clamp(max=h - 1), (centre_x * w).long().clamp(max=w - 1))
    return out.clamp(0.0, 1.0).to(x.dtype)
