"""The in-memory form every data source returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ssl_toolkit.errors import UserInputError


@dataclass
class DatasetArrays:
    """Images and labels of one data set, as read from its files.

    Images are ``uint8`` arrays shaped ``(N, C, H, W)``; labels are ``int64`` in ``[0, num_classes)``.
    ``x_extra_unlabeled`` holds images that only ever join the unlabeled pool (SVHN extra, STL-10
    unlabeled, a user's ``x_unlabeled``).

    Example:
        >>> arrays = DatasetArrays("toy", x, y, x_test, y_test, num_classes=10)
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    x_extra_unlabeled: np.ndarray | None = None
    class_names: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise UserInputError on wrong dtypes, shapes or out-of-range labels."""
        parts = [("x_train", self.x_train), ("x_test", self.x_test)]
        if self.x_extra_unlabeled is not None:
            parts.append(("x_extra_unlabeled", self.x_extra_unlabeled))
        for part, x in parts:
            if x.dtype != np.uint8 or x.ndim != 4:
                raise UserInputError(
                    f"{self.name}: {part} must be uint8 images shaped (N, C, H, W), "
                    f"got dtype {x.dtype} and shape {tuple(x.shape)}"
                )
            if x.shape[1:] != self.x_train.shape[1:]:
                raise UserInputError(
                    f"{self.name}: {part} images are {tuple(x.shape[1:])}, "
                    f"but training images are {tuple(self.x_train.shape[1:])}"
                )
        for part, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if y.ndim != 1 or len(y) != len(x):
                raise UserInputError(
                    f"{self.name}: {len(x)} {part} images but labels shaped {tuple(y.shape)}"
                )
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise UserInputError(
                    f"{self.name}: {part} labels must lie in [0, {self.num_classes - 1}], "
                    f"found {int(y.min())}..{int(y.max())}"
                )
        self.y_train = self.y_train.astype(np.int64, copy=False)
        self.y_test = self.y_test.astype(np.int64, copy=False)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 images ``(N, C, H, W)`` resized to ``size x size`` with Pillow's bicubic filter.

    The same filter resizes image-folder files as they are read and the files given to
    ``ssl-bench predict``, so a model sees its inputs resized one way. Images already of that size
    come back unchanged.
    """
    from PIL import Image

    if images.shape[2:] == (size, size):
        return images
    out = np.empty((len(images), images.shape[1], size, size), np.uint8)
    for i, image in enumerate(images):
        if image.shape[0] == 3:
            resized = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)), "RGB")
            out[i] = np.asarray(resized.resize((size, size), Image.Resampling.BICUBIC)).transpose(2, 0, 1)
            continue
        for channel, plane in enumerate(image):  # Pillow filters each channel of an image alone
            resized = Image.fromarray(plane, "L").resize((size, size), Image.Resampling.BICUBIC)
            out[i, channel] = np.asarray(resized, dtype=np.uint8)
    return out
