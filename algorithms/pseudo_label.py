"""Pseudo-Label (Lee 2013), as Oliver et al. 2018 evaluated it: the model's own confident predictions as labels."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ssl_toolkit.algorithm import Batch, ConsistencyAlgorithm, ConsistencyWeightConfig
from ssl_toolkit.losses import NO_LABEL, confident_pseudo_labels, masked_cross_entropy
from ssl_toolkit.registry import register_algorithm
from ssl_toolkit.settings import setting


@dataclass
class PseudoLabelConfig(ConsistencyWeightConfig):
    """Pseudo-Label hyperparameters (Oliver et al.'s): w_max = 1 with the sigmoid ramp-up, threshold 0.95.

    ``threshold=0`` gives Lee's plain argmax labels.
    """

    consistency_weight: float | None = setting(
        1.0, "w_max: a confident pseudo-label weighs this much of a label; None: label_fraction_scale x labeled "
        "share", low=0.0, search="log:0.1:10",
    )
    label_fraction_scale: float = setting(1.0, "w_max = this x labeled share when consistency_weight is None",
                                          low=0.0)
    threshold: float = setting(0.95, "τ: keep a pseudo-label when its probability is at least this (0: all)",
                               low=0.0, high=1.0, search="uniform:0.5:0.99")


@register_algorithm("pseudo_label")
class PseudoLabel(ConsistencyAlgorithm):
    """Pseudo-Label: cross-entropy of the student against the argmax of its own predictions.

    On each unlabeled image the class the student itself predicts (detached) becomes a hard label
    when its probability is at least τ. The term is the labeled loss's own cross-entropy on those
    labels, summed and divided by the whole batch, so at weight 1 a confident pseudo-label counts as
    much as a label (Oliver et al.'s code); the weight ramps up with the sigmoid ramp.

    References:
        Lee, "Pseudo-Label: The simple and efficient semi-supervised learning method for deep neural
        networks", ICML 2013 Workshop on Challenges in Representation Learning;
        Oliver et al., "Realistic evaluation of deep semi-supervised learning algorithms", NeurIPS 2018.

    Example:
        ssl-bench run --algo pseudo_label --dataset digits --labels 50
    """

    Config = PseudoLabelConfig
    config: PseudoLabelConfig
    views = {"student": "weak"}

    def teacher_targets(self, batch: Batch, output: Tensor) -> Tensor:
        labels, confident = confident_pseudo_labels(output, self.config.threshold)
        return torch.where(batch.unlabeled_mask & confident, labels, NO_LABEL)

    def consistency_loss(self, output: Tensor, targets: Tensor, batch: Batch) -> Tensor:
        return masked_cross_entropy(output, targets)
