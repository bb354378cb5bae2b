"""Seeded, class-balanced labeled / validation / unlabeled splits, named and saved with each run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssl_toolkit.errors import UserInputError


@dataclass
class Split:
    """Row indices into the training pool (training images, then any extra unlabeled images).

    ``unlabeled`` is every training image outside the validation set (labeled ones included, as
    in the papers) plus the extra unlabeled images.
    """

    name: str
    labeled: np.ndarray
    val: np.ndarray
    unlabeled: np.ndarray

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "labeled": self.labeled.tolist(),
            "val": self.val.tolist(),
            "num_unlabeled": int(len(self.unlabeled)),
        }


def _largest_remainder_quotas(counts: np.ndarray, total: int) -> np.ndarray:
    exact = counts * total / counts.sum()
    quotas = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[: total - quotas.sum()]] += 1
    return quotas


def _pick_per_class(y: np.ndarray, candidates: np.ndarray, quotas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Take ``quotas[c]`` images of each class c from ``candidates``, in a seeded random order.

    Because the order is fixed by the seed, a larger quota extends a smaller one: the labeled set
    for 100 labels contains the one for 50.
    """
    shuffled = candidates[rng.permutation(len(candidates))]
    chosen = [shuffled[y[shuffled] == c][:q] for c, q in enumerate(quotas)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def make_split(
    dataset: str,
    y_train: np.ndarray,
    num_classes: int,
    labels: int,
    val_size: int,
    seed: int,
    num_extra_unlabeled: int = 0,
    unlabeled_pool: int | None = None,
) -> Split:
    """Split the training set: stratified validation, class-balanced labeled subset, unlabeled pool.

    The validation set depends only on (data set, seed, val_size), so runs with different label
    counts share it; the held-out test set is never touched here. ``unlabeled_pool`` caps the
    unlabeled stream at that many images: every labeled image plus a seeded random draw from the
    rest, so that a short budget still makes many passes over it (Temporal Ensembling's targets
    change once per pass). A cap at or above the pool's size keeps the whole pool.
    """
    n = len(y_train)
    class_counts = np.bincount(y_train, minlength=num_classes)
    if val_size < 0 or val_size > n - num_classes:
        raise UserInputError(f"--val-size {val_size} is out of range for {dataset}; valid: 0..{n - num_classes}")
    if labels < num_classes:
        raise UserInputError(
            f"--labels {labels} is fewer than the {num_classes} classes of {dataset}; "
            f"valid: {num_classes}..{n - val_size} (at least one per class)"
        )
    if labels > n - val_size:
        raise UserInputError(
            f"--labels {labels} is more than the {n - val_size} training images of {dataset} left after "
            f"--val-size {val_size}; valid: {num_classes}..{n - val_size}"
        )
    val_rng = np.random.default_rng([seed, 1])
    val = _pick_per_class(y_train, np.arange(n), _largest_remainder_quotas(class_counts, val_size), val_rng)
    remaining = np.setdiff1d(np.arange(n), val)
    remaining_counts = np.bincount(y_train[remaining], minlength=num_classes)

    quotas = np.full(num_classes, labels // num_classes, dtype=np.int64)
    extra_rng = np.random.default_rng([seed, 2])
    quotas[extra_rng.permutation(num_classes)[: labels % num_classes]] += 1
    short = np.flatnonzero(quotas > remaining_counts)
    if len(short):
        c = int(short[0])
        raise UserInputError(
            f"--labels {labels} needs {quotas[c]} labeled images of class {c} in {dataset}, "
            f"but only {remaining_counts[c]} remain outside the validation set"
        )
    labeled = _pick_per_class(y_train, remaining, quotas, np.random.default_rng([seed, 3]))
    unlabeled = np.concatenate([remaining, n + np.arange(num_extra_unlabeled)]).astype(np.int64)
    name = f"{dataset}.{seed}@{labels}-{val_size}"
    if unlabeled_pool is not None and unlabeled_pool < len(unlabeled):
        unlabeled = _capped_pool(dataset, unlabeled, labeled, unlabeled_pool, seed)
        name += f"-u{unlabeled_pool}"
    return Split(name=name, labeled=labeled, val=val, unlabeled=unlabeled)


def _capped_pool(dataset: str, unlabeled: np.ndarray, labeled: np.ndarray, size: int, seed: int) -> np.ndarray:
    """The labeled images plus ``size - len(labeled)`` others drawn from ``unlabeled`` by the seed."""
    if size < len(labeled):
        raise UserInputError(
            f"--unlabeled-pool {size} is smaller than the {len(labeled)} labeled images of {dataset}, which it "
            f"must hold; valid: {len(labeled)} or more (at least {len(unlabeled)} keeps the whole pool)"
        )
    others = np.setdiff1d(unlabeled, labeled)
    drawn = others[np.random.default_rng([seed, 4]).permutation(len(others))[: size - len(labeled)]]
    return np.sort(np.concatenate([labeled, drawn])).astype(np.int64)
