"""Π-model (Laine & Aila, ICLR 2017): two stochastic passes of the same network must agree."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ssl_toolkit.algorithm import Batch, ConsistencyAlgorithm, ConsistencyConfig
from ssl_toolkit.registry import register_algorithm
from ssl_toolkit.settings import setting


@dataclass
class PiModelConfig(ConsistencyConfig):
    """Π-model hyperparameters: ``w_max = 100 * M / N`` (Laine & Aila 2017, Sec. 3.1)."""

    label_fraction_scale: float = setting(100.0, "w_max = this x labeled share when consistency_weight is None",
                                          low=0.0)


@register_algorithm("pi_model")
class PiModel(ConsistencyAlgorithm):
    """Π-model: the target is a second pass of the student on another view, *with* gradients.

    Gradients flow through both branches, as in the paper: the target is not detached, and
    ``targets_need_gradient`` declares it so to the conformance checks.

    References:
        Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017, Sec. 2.1.

    Example:
        ssl-bench run --algo pi_model --dataset digits --labels 50
    """

    Config = PiModelConfig
    views = {"student": "weak", "teacher": "weak"}
    targets_need_gradient = True

    def teacher_targets(self, batch: Batch, output: Tensor) -> Tensor:
        return self.student(batch.view("teacher"))
