"""Data set registry: each name maps to a reader of its official files and the defaults that suit it.

Register your own with the decorator, in a module you pass to ``--plugin``::

    @register_dataset("my_set", backbone="convnet_small", val_size=500, description="my arrays",
                      run_defaults={"steps": 2000, "batch_size": 64, "labeled_batch_size": 16,
                                    "eval_every": 250, "labels": 100})
    def load_my_set(data_dir: Path, options: dict) -> DatasetArrays:
        return DatasetArrays("my_set", x_train, y_train, x_test, y_test, num_classes=10)
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssl_toolkit.data.arrays import DatasetArrays
from ssl_toolkit.data.augment import AugmentConfig
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.naming import closest

Loader = Callable[[Path, dict[str, Any]], DatasetArrays]
HOME_DATA = str(Path("~") / "data")


@dataclass(frozen=True)
class DatasetSpec:
    """How to load a data set and the defaults that suit it (augmentation, backbone, sizes).

    ``load(data_dir, options)`` reads the files (``options``: ``svhn_extra``, ``image_size``,
    ``max_unlabeled`` from the run config); ``run_defaults`` fill the run settings a user leaves
    out; ``default_preset`` names a preset applied beneath the user's values. ``sized_to_data``
    data sets (a user's own) get their network, validation size and step budget from the data
    itself (:func:`defaults_for_data`), read before anything runs.
    """

    name: str
    load: Loader
    augment: AugmentConfig = AugmentConfig()
    backbone: str = "convnet13"
    val_size: int = 0
    default_data_dir: str = HOME_DATA
    description: str = ""
    run_defaults: dict[str, Any] = field(default_factory=dict)
    default_preset: str | None = None
    sized_to_data: bool = False


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, **defaults: Any) -> Callable[[Loader], Loader]:
    """Decorator: register ``load(data_dir, options) -> DatasetArrays`` as data set ``name``.

    ``defaults`` are the other :class:`DatasetSpec` fields. A duplicate name raises.
    """

    def decorate(load: Loader) -> Loader:
        if name in _DATASETS:
            raise UserInputError(f"data set {name!r} is already registered by {_DATASETS[name].load.__module__}")
        _DATASETS[name] = DatasetSpec(name=name, load=load, **defaults)
        return load

    return decorate


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered data set names matching a shell-style wildcard, sorted."""
    return sorted(name for name in _DATASETS if fnmatch.fnmatch(name, pattern))


def get_dataset_spec(name: str) -> DatasetSpec:
    """The spec registered as ``name``; an unknown name suggests the closest ones."""
    try:
        return _DATASETS[name]
    except KeyError:
        known = list_datasets()
        raise UserInputError(f"unknown data set {name!r}{closest(name, known)}; valid: {', '.join(known)}") from None


def load_dataset(name: str, data_dir: str | Path | None, options: dict[str, Any] | None = None) -> DatasetArrays:
    """Read data set ``name`` from ``data_dir`` (its default folder when None).

    The last arrays read are kept, keyed by the files' path and modification time, so resolving a
    config from the data (own data sets) and then training it reads the files once.
    """
    spec = get_dataset_spec(name)
    folder = Path(data_dir if data_dir else spec.default_data_dir).expanduser()
    stamp = folder.stat().st_mtime_ns if folder.exists() else None
    return _load(spec.name, folder, tuple(sorted((options or {}).items())), stamp)


@functools.lru_cache(maxsize=1)
def _load(name: str, folder: Path, options: tuple, stamp: int | None) -> DatasetArrays:
    return get_dataset_spec(name).load(folder, dict(options))


def defaults_for_data(arrays: DatasetArrays, extra_unlabeled: int = 0, image_size: int | None = None) -> dict[str, Any]:
    """Run settings sized to a user's own data, for those the user did not give.

    A network for the image size (convnet_tiny up to 12 pixels, convnet_small up to 40, ConvNet-13
    above), a stratified 10% validation set (at most 5000 images), and a step budget of about 30
    passes over the unlabeled stream, between 500 and 10,000 steps, with ten evaluations.
    """
    side = image_size or min(arrays.x_train.shape[2:])
    backbone = "convnet_tiny" if side <= 12 else "convnet_small" if side <= 40 else "convnet13"
    n_train = len(arrays.y_train)
    val_size = min(5000, round(0.1 * n_train)) if n_train >= 10 * arrays.num_classes else 0
    batch_size, labeled_batch_size = 64, 16
    unlabeled = n_train - val_size + extra_unlabeled
    steps = int(min(10_000, max(500, round(30 * unlabeled / (batch_size - labeled_batch_size)))))
    labels = min(100, max(arrays.num_classes, (n_train - val_size) // 2))
    return {"backbone": backbone, "val_size": val_size, "batch_size": min(batch_size, unlabeled + labeled_batch_size),
            "labeled_batch_size": labeled_batch_size, "steps": steps, "eval_every": max(1, steps // 10),
            "labels": labels}


# -- the shipped data sets ------------------------------------------------------------------------

_MNIST_RUN = {"steps": 2000, "batch_size": 64, "labeled_batch_size": 16, "eval_every": 500, "labels": 1000}
# The paper's ConvNet settings: 100 images per batch; 150k (CIFAR) / 180k (SVHN) steps.
_PAPER_RUN = {"steps": 150_000, "batch_size": 100, "labeled_batch_size": 50, "eval_every": 5000}
_PAPER_NOISE = AugmentConfig(translate=2, flip=False, noise=0.15)
_PAPER_NOISE_FLIP = AugmentConfig(translate=2, flip=True, noise=0.15)


@register_dataset(
    "digits", augment=AugmentConfig(translate=1, flip=False, noise=0.15), backbone="convnet_tiny", val_size=200,
    default_data_dir="", description="scikit-learn's embedded 8x8 handwritten digits (1797 images, 10 classes)",
    run_defaults={"steps": 3800, "batch_size": 64, "labeled_batch_size": 16, "eval_every": 500, "labels": 50},
    default_preset="digits-cpu",
)
def load_digits(data_dir: Path, options: dict[str, Any]) -> DatasetArrays:
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
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
    return DatasetArrays("digits", images[~is_test], labels[~is_test], images[is_test], labels[is_test],
                         num_classes=10, class_names=[str(d) for d in range(10)])


@register_dataset("mnist", augment=_PAPER_NOISE, backbone="convnet_small", val_size=5000, run_defaults=_MNIST_RUN,
                  description="MNIST: 28x28 grayscale, 10 classes, the four official IDX files (.gz or not)")
def load_mnist(data_dir: Path, options: dict[str, Any]) -> DatasetArrays:
    from ssl_toolkit.data.formats import read_mnist_idx

    return read_mnist_idx(data_dir, "mnist")


@register_dataset(
    "fashion_mnist", augment=_PAPER_NOISE, backbone="convnet_small", val_size=5000, run_defaults=_MNIST_RUN,
    default_data_dir="/usr/share/datasets/fashion-mnist", default_preset="fmnist-cpu",
    description="Fashion-MNIST: 28x28 grayscale, 10 classes, the four official IDX files (.gz or not)",
)
def load_fashion_mnist(data_dir: Path, options: dict[str, Any]) -> DatasetArrays:
    from ssl_toolkit.data.formats import read_mnist_idx

    return read_mnist_idx(data_dir, "fashion_mnist")


@register_dataset("cifar10", augment=_PAPER_NOISE_FLIP, val_size=5000, run_defaults={**_PAPER_RUN, "labels": 4000},
                  description="CIFAR-10: 32x32 RGB, 10 classes, cifar-10-batches-py")
def load_cifar10(data_dir: Path, options: dict[str, Any]) -> DatasetArrays:
    from ssl_toolkit.data.formats import read_cifar10

    return read_cifar10(data_dir)


@register_dataset("cifar100", augment=_PAPER_NOISE_FLIP, val_size=5000,
                  run_defaults={**_PAPER_RUN, "labels": 10000},
                  description="CIFAR-100: 32x32 RGB, 100 fine classes, cifar-100-python")
def load_cifar100(data_dir: Path, options: dict[str, Any]) -> DatasetArrays:
    from ssl_toolkit.data.formats import read_cifar100

    return read_cifar100(data_dir)


@register_dataset("svhn", augment=_PAPER_NOISE, val_size=5000,
                  run_defaults={**_PAPER_RUN, "steps": 180_000, "labeled_batch_size": 1, "labels": 1000},
                  description="SVHN: 32x32 RGB digits, train/test_32x32.mat (+ extra_32x32.mat with --svhn-extra)")
def load_svhn(data_dir: Path, options: dict[str, Any]) -> DatasetArrays:
    from ssl_toolkit.data.formats import read_svhn

    return read_svhn(data_dir, extra=bool(options.get("svhn_extra")))


@register_dataset("stl10", augment=_PAPER_NOISE_FLIP, val_size=500, run_defaults={**_PAPER_RUN, "labels": 1000},
                  description="STL-10: 96x96 RGB, 10 classes, stl10_binary; unlabeled_X.bin joins the unlabeled pool")
def load_stl10(data_dir: Path, options: dict[str, Any]) -> DatasetArrays:
    from ssl_toolkit.data.formats import read_stl10

    return read_stl10(data_dir, max_unlabeled=options.get("max_unlabeled"))


@register_dataset("imagefolder", augment=_PAPER_NOISE_FLIP, default_data_dir="data", sized_to_data=True,
                  description="your images: --data-dir with train/ and test/, one folder per class "
                              "(--image-size to resize)")
def load_imagefolder(data_dir: Path, options: dict[str, Any]) -> DatasetArrays:
    from ssl_toolkit.data.formats import read_imagefolder

    return read_imagefolder(data_dir, image_size=options.get("image_size"))


@register_dataset("npz", augment=_PAPER_NOISE, default_data_dir="data.npz", sized_to_data=True,
                  description="your arrays: --data-dir FILE.npz with x_train, y_train, x_test, y_test "
                              "(+ x_unlabeled)")
def load_npz(data_dir: Path, options: dict[str, Any]) -> DatasetArrays:
    from ssl_toolkit.data.formats import read_npz

    return read_npz(data_dir)
