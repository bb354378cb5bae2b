"""From a run config to tensors on the training device: the pool, the split, the evaluation sets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ssl_toolkit.config import RunConfig
from ssl_toolkit.data.arrays import DatasetArrays, resize_images
from ssl_toolkit.data.augment import Normalizer, Preprocess
from ssl_toolkit.data.sources import load_dataset
from ssl_toolkit.data.splits import Split, make_split
from ssl_toolkit.data.zca import ZCAWhitener
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.losses import NO_LABEL

# Preprocessing statistics come from at most this many unlabeled training images.
FIT_SAMPLE = 50_000


@dataclass
class PreparedData:
    """Training pool, evaluation sets and split, as tensors on the training device.

    ``pool`` holds every training image (then any extra unlabeled ones) as uint8; ``preprocess``
    turns images into network inputs (standardization, or ZCA whitening), fit on the training pool.
    """

    pool: torch.Tensor
    pool_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    split: Split
    num_classes: int
    preprocess: Preprocess
    class_names: list[str] | None


def load_arrays(config: RunConfig) -> DatasetArrays:
    """The data set's arrays, resized to ``config.image_size`` when it is set."""
    arrays = load_dataset(config.dataset, config.data_dir, config.dataset_options())
    if config.image_size is None:
        return arrays
    extra = arrays.x_extra_unlabeled
    # A new DatasetArrays: the one load_dataset returned is kept for the next caller as it was read.
    return dataclasses.replace(
        arrays,
        x_train=resize_images(arrays.x_train, config.image_size),
        x_test=resize_images(arrays.x_test, config.image_size),
        x_extra_unlabeled=None if extra is None else resize_images(extra, config.image_size),
    )


def backbone_normalizer(backbone: str, channels: int) -> Normalizer:
    """The mean and std in the backbone's timm ``pretrained_cfg``, for ``channels`` input channels.

    Grayscale input to an RGB backbone takes the mean of the three channels' values: the pretrained
    first convolution, its RGB filters summed, then sees a gray image as it saw (g, g, g) up to the
    channels' differences in mean and std.
    """
    import timm.models

    cfg = timm.models.get_pretrained_cfg(backbone)
    if cfg is None or cfg.mean is None or cfg.std is None:
        raise UserInputError(
            f"--normalization backbone: backbone {backbone!r} declares no mean and std in its timm pretrained_cfg; "
            f"valid: --normalization fit, or a timm model with pretrained weights (e.g. resnet18)"
        )
    mean, std = torch.tensor(cfg.mean, dtype=torch.float32), torch.tensor(cfg.std, dtype=torch.float32)
    if len(mean) != channels:
        if channels != 1:
            raise UserInputError(f"--normalization backbone: backbone {backbone!r} normalizes {len(mean)} channels "
                                 f"but the data has {channels}; valid: --normalization fit")
        mean, std = mean.mean(dim=0, keepdim=True), std.mean(dim=0, keepdim=True)
    return Normalizer(mean, std)


def fit_preprocess(config: RunConfig, pool: torch.Tensor, split: Split) -> Preprocess:
    """Fit the input statistics on the training pool only (never validation or test images), or take
    the backbone's own (``--normalization backbone``)."""
    if config.normalization == "backbone":
        if config.zca:
            raise UserInputError("--zca and --normalization backbone exclude each other: whiten the inputs, or "
                                 "standardize them as the backbone's pretrained weights expect")
        return backbone_normalizer(config.backbone, pool.shape[1])
    sample = split.unlabeled[np.random.default_rng(0).permutation(len(split.unlabeled))[:FIT_SAMPLE]]
    fit_images = pool[torch.from_numpy(np.sort(sample)).to(pool.device)]
    return ZCAWhitener.fit(fit_images) if config.zca else Normalizer.fit(fit_images)


def preprocess_from_state(state: dict[str, Any]) -> Preprocess:
    """Rebuild the preprocessing saved by ``state_dict()`` (a checkpoint's or an export's)."""
    if state.get("kind") == "standardize":
        return Normalizer.from_state_dict(state)
    return ZCAWhitener.from_state_dict(state)


def prepare_data(
    config: RunConfig, device: torch.device, preprocess_state: dict[str, Any] | None = None
) -> PreparedData:
    """Read the data set, draw the run's split and move everything to ``device``.

    ``preprocess_state`` (from a checkpoint) restores the saved statistics instead of refitting them.
    """
    arrays = load_arrays(config)
    extra = arrays.x_extra_unlabeled
    split = make_split(
        config.dataset, arrays.y_train, arrays.num_classes, config.labels, config.val_size, config.seed,
        num_extra_unlabeled=0 if extra is None else len(extra), unlabeled_pool=config.unlabeled_pool,
    )
    pool_np = arrays.x_train if extra is None else np.concatenate([arrays.x_train, extra])
    labels_np = np.concatenate([arrays.y_train, np.full(len(pool_np) - len(arrays.y_train), NO_LABEL)])
    pool = torch.from_numpy(pool_np).to(device)
    pool_labels = torch.from_numpy(labels_np).to(device)
    if preprocess_state is not None:
        preprocess = preprocess_from_state(preprocess_state)
    else:
        preprocess = fit_preprocess(config, pool, split)
    val = torch.from_numpy(split.val).to(device)
    return PreparedData(
        pool=pool,
        pool_labels=pool_labels,
        val_images=pool[val],
        val_labels=pool_labels[val],
        test_images=torch.from_numpy(arrays.x_test).to(device),
        test_labels=torch.from_numpy(arrays.y_test).to(device),
        split=split,
        num_classes=arrays.num_classes,
        preprocess=preprocess.to(device),
        class_names=arrays.class_names,
    )
