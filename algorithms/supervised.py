"""Supervised baseline: cross-entropy on the labeled images only, same backbone and augmentation."""

from __future__ import annotations

from dataclasses import dataclass

from ssl_toolkit.algorithm import AlgorithmConfig, SSLAlgorithm
from ssl_toolkit.registry import register_algorithm


@dataclass
class SupervisedConfig(AlgorithmConfig):
    """The supervised baseline has no hyperparameters of its own."""


@register_algorithm("supervised")
class Supervised(SSLAlgorithm):
    """Train on labeled images only: the baseline every SSL algorithm must beat.

    The unlabeled images still pass through the network, so BatchNorm statistics and the loss
    normalization match the SSL algorithms exactly; only the consistency term is missing. It uses
    one view, so the trainer builds only that one.

    Example:
        ssl-bench run --algo supervised --dataset digits --labels 50
    """

    Config = SupervisedConfig
    views = {"student": "weak"}
