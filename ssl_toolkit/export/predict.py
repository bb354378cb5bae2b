"""Classifying new images with an exported model: image files or an .npz of arrays, top-k classes.

Image files are read as the imagefolder data set reads them (Pillow; grayscale or RGB as the model
takes; resized with the bicubic filter); arrays are resized with the same filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ssl_toolkit.data.arrays import resize_images
from ssl_toolkit.data.formats import IMAGE_EXTENSIONS, as_uint8_images, read_image_array
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.export.folder import ExportedPreprocess

NPZ_KEYS = ("images", "x_test")
PREDICT_BATCH = 256
DEFAULT_TOP = 3


@dataclass(frozen=True)
class Prediction:
    """The ``top`` classes of one input, most probable first: (class index, class name, probability)."""

    source: str
    classes: list[tuple[int, str, float]]


def read_npz_images(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """The images of an .npz (its ``images`` or ``x_test`` array, or its only array) as uint8 (N, C, H, W)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            key = next((k for k in NPZ_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise UserInputError(f"{path}: holds {', '.join(keys) or 'no arrays'}; valid: an .npz with an "
                                     f"'images' or 'x_test' array, or a single array")
            images = as_uint8_images(path, key, archive[key])
    except (OSError, ValueError, EOFError) as error:
        raise UserInputError(f"{path}: not a readable .npz archive ({type(error).__name__}: {error})") from None
    if images.shape[1] != channels:
        raise UserInputError(f"{path}: {key} has {images.shape[1]} channels, the model takes {channels}")
    if images.shape[2:] != size and size[0] == size[1]:
        images = resize_images(images, size[0])
    if images.shape[2:] != size:
        raise UserInputError(f"{path}: {key} images are {images.shape[2]}x{images.shape[3]}, the model takes "
                             f"{size[0]}x{size[1]}")
    return images


def read_inputs(paths: list[str | Path], preprocess: ExportedPreprocess) -> tuple[list[str], np.ndarray]:
    """Every input as uint8 (N, C, H, W) of the model's input size, with a name for each image
    (the file's path, or ``file.npz[i]``)."""
    channels, height, width = preprocess.input_size
    square = height if height == width else None
    names: list[str] = []
    parts: list[np.ndarray] = []
    for item in map(Path, paths):
        if not item.is_file():
            raise UserInputError(f"{item}: no such file; valid: image files ({', '.join(IMAGE_EXTENSIONS)}) "
                                 f"or an .npz")
        if item.suffix.lower() == ".npz":
            images = read_npz_images(item, channels, (height, width))
            names += [f"{item}[{i}]" for i in range(len(images))]
            parts.append(images)
            continue
        if item.suffix.lower() not in IMAGE_EXTENSIONS:
            raise UserInputError(f"{item}: not an image file; valid: {', '.join(IMAGE_EXTENSIONS)}, or .npz")
        image = read_image_array(item, channels == 1, square)
        if image.shape[1:] != (height, width):
            raise UserInputError(f"{item} is {image.shape[2]}x{image.shape[1]}, the model takes {width}x{height}")
        names.append(str(item))
        parts.append(image[None])
    if not parts:
        raise UserInputError("no images given; valid: image files or an .npz")
    return names, np.concatenate(parts)


@torch.no_grad()
def predict(model: nn.Module, preprocess: ExportedPreprocess, images: np.ndarray, names: list[str],
            top: int | None = None, batch_size: int = PREDICT_BATCH) -> list[Prediction]:
    """The ``top`` most probable classes of each image (softmax of the model's logits); ``None``: 3, or
    every class of a model with fewer."""
    classes = len(preprocess.class_names)
    top = min(DEFAULT_TOP, classes) if top is None else top
    if not 1 <= top <= classes:
        raise UserInputError(f"--top {top} is out of range; valid: 1..{classes} (the model's classes)")
    device = next(model.parameters()).device
    model.eval()
    predictions = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size]).to(device)
        probabilities = model(preprocess(batch)).softmax(dim=1)
        values, indices = probabilities.topk(top, dim=1)
        for offset, (row_values, row_indices) in enumerate(zip(values.tolist(), indices.tolist(), strict=True)):
            ranked = [(i, preprocess.class_names[i], p) for i, p in zip(row_indices, row_values, strict=True)]
            predictions.append(Prediction(names[start + offset], ranked))
    return predictions
