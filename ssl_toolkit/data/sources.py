"""Data set registry: each name maps to a reader of its official files and its paper defaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssl_toolkit.data.arrays import DatasetArrays
from ssl_toolkit.data.augment import AugmentConfig
from ssl_toolkit.errors import UserInputError


@dataclass(frozen=True)
class DatasetSpec:
    """How to load a data set and the defaults that suit it (augmentation, backbone, sizes)."""

    name: str
    load: Callable[[Path, dict[str, Any]], DatasetArrays]
    augment: AugmentConfig
    backbone: str
    val_size: int
    default_data_dir: str
    description: str
    run_defaults: dict[str, Any] = field(default_factory=dict)
    default_preset: str | None = None


def _load_digits(data_dir: Path, options: dict[str, Any]) -> DatasetArrays:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # scikit-learn's digits are 0..16 intensities; scale to the uint8 range of every other set.
    images = np.clip(digits.images * 16.0, 0, 255).astype(np.uint8)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    # The set has no official test split; a fixed stratified 20% (seed 0, independent of the run
    # seed) serves as one, so every run and every seed is scored on the same images.
    rng = np.random.default_rng(0)
    test = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[: round(0.2 * np.sum(labels == c))] for c in range(10)]
    )
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test] = True
    return DatasetArrays(
        "digits", images[~is_test], labels[~is_test], images[is_test], labels[is_test], num_classes=10
    )


def _reader(name: str) -> Callable[[Path, dict[str, Any]], DatasetArrays]:
    """A loader that calls the official-format reader of ``name`` with the options it understands."""

    def load(data_dir: Path, options: dict[str, Any]) -> DatasetArrays:
        from ssl_toolkit.data import formats

        if name in ("mnist", "fashion_mnist"):
            return formats.read_mnist_idx(data_dir, name)
        if name == "svhn":
            return formats.read_svhn(data_dir, extra=bool(options.get("svhn_extra")))
        if name == "stl10":
            return formats.read_stl10(data_dir, max_unlabeled=options.get("max_unlabeled"))
        if name == "imagefolder":
            return formats.read_imagefolder(data_dir, image_size=options.get("image_size"))
        return getattr(formats, f"read_{name}")(data_dir)

    return load


def _default_dir(name: str) -> str:
    from ssl_toolkit.data.formats import default_data_dir

    return str(default_data_dir(name))


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a data set to the registry; a duplicate name raises."""
    if spec.name in _DATASETS:
        raise ValueError(f"data set {spec.name!r} is already registered")
    _DATASETS[spec.name] = spec
    return spec


register_dataset(
    DatasetSpec(
        name="digits",
        load=_load_digits,
        augment=AugmentConfig(translate=1, flip=False, noise=0.15),
        backbone="convnet_tiny",
        val_size=200,
        default_data_dir="",
        description="scikit-learn's embedded 8x8 handwritten digits (1797 images, 10 classes)",
        run_defaults={"steps": 1500, "batch_size": 64, "labeled_batch_size": 16, "eval_every": 250, "labels": 50},
        default_preset="digits-cpu",
    )
)
_MNIST_RUN = {"steps": 2000, "batch_size": 64, "labeled_batch_size": 16, "eval_every": 500, "labels": 1000}
# The paper's ConvNet settings: 100 images per batch; 150k (CIFAR) / 180k (SVHN) steps.
_PAPER_RUN = {"steps": 150_000, "batch_size": 100, "labeled_batch_size": 50, "eval_every": 5000}
_PAPER_NOISE = AugmentConfig(translate=2, flip=False, noise=0.15)
_PAPER_NOISE_FLIP = AugmentConfig(translate=2, flip=True, noise=0.15)

for _spec in (
    DatasetSpec("mnist", _reader("mnist"), _PAPER_NOISE, "convnet_small", 5000, _default_dir("mnist"),
                "MNIST: 28x28 grayscale, 10 classes, the four official IDX files (.gz or not)", _MNIST_RUN),
    DatasetSpec("fashion_mnist", _reader("fashion_mnist"), _PAPER_NOISE, "convnet_small", 5000,
                _default_dir("fashion_mnist"),
                "Fashion-MNIST: 28x28 grayscale, 10 classes, the four official IDX files (.gz or not)", _MNIST_RUN,
                default_preset="fmnist-cpu"),
    DatasetSpec("cifar10", _reader("cifar10"), _PAPER_NOISE_FLIP, "convnet13", 5000, _default_dir("cifar10"),
                "CIFAR-10: 32x32 RGB, 10 classes, cifar-10-batches-py", {**_PAPER_RUN, "labels": 4000}),
    DatasetSpec("cifar100", _reader("cifar100"), _PAPER_NOISE_FLIP, "convnet13", 5000, _default_dir("cifar100"),
                "CIFAR-100: 32x32 RGB, 100 fine classes, cifar-100-python", {**_PAPER_RUN, "labels": 10000}),
    DatasetSpec("svhn", _reader("svhn"), _PAPER_NOISE, "convnet13", 5000, _default_dir("svhn"),
                "SVHN: 32x32 RGB digits, train/test_32x32.mat (+ extra_32x32.mat with --svhn-extra)",
                {**_PAPER_RUN, "steps": 180_000, "labeled_batch_size": 1, "labels": 1000}),
    DatasetSpec("stl10", _reader("stl10"), _PAPER_NOISE_FLIP, "convnet13", 500, _default_dir("stl10"),
                "STL-10: 96x96 RGB, 10 classes, stl10_binary; unlabeled_X.bin joins the unlabeled pool",
                {**_PAPER_RUN, "labels": 1000}),
    DatasetSpec("imagefolder", _reader("imagefolder"), _PAPER_NOISE_FLIP, "convnet13", 0, "data",
                "your images: --data-dir with train/ and test/, one folder per class (--image-size to resize)",
                {"steps": 10_000, "batch_size": 100, "labeled_batch_size": 25, "eval_every": 1000, "labels": 100}),
    DatasetSpec("npz", _reader("npz"), _PAPER_NOISE, "convnet13", 0, "data.npz",
                "your arrays: --data-dir FILE.npz with x_train, y_train, x_test, y_test (+ x_unlabeled)",
                {"steps": 10_000, "batch_size": 100, "labeled_batch_size": 25, "eval_every": 1000, "labels": 100}),
):
    register_dataset(_spec)


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def get_dataset_spec(name: str) -> DatasetSpec:
    """The spec registered as ``name``; an unknown name lists the known ones."""
    try:
        return _DATASETS[name]
    except KeyError:
        raise UserInputError(f"unknown data set {name!r}; valid: {', '.join(list_datasets())}") from None


def load_dataset(name: str, data_dir: str | Path | None, options: dict[str, Any] | None = None) -> DatasetArrays:
    """Read data set ``name`` from ``data_dir`` (its default folder when None)."""
    spec = get_dataset_spec(name)
    folder = Path(data_dir if data_dir else spec.default_data_dir).expanduser()
    return spec.load(folder, options or {})
