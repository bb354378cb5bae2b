"""Π-model (Laine & Aila, ICLR 2017): two stochastic passes of the same network must agree."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ssl_toolkit.algorithm import Batch, ConsistencyConfig, SSLAlgorithm
from ssl_toolkit.consistency import ConsistencyMixin
from ssl_toolkit.registry import register_algorithm


@dataclass
class PiModelConfig(ConsistencyConfig):
    """Π-model hyperparameters: ``w_max = 100 * M / N`` (Laine & Aila 2017, Sec. 3.1)."""

    label_fraction_scale: float = 100.0


@register_algorithm("pi_model")
class PiModel(ConsistencyMixin, SSLAlgorithm):
    """Π-model: the target is a second pass of the student on another view, *with* gradients.

    Gradients flow through both branches, as in the paper (the target is not detached).

    References:
        Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017, Sec. 2.1.

    Example:
        ssl-bench run --algo pi_model --dataset digits --labels 50
    """

    Config = PiModelConfig

    def teacher_targets(self, batch: Batch, student_logits: Tensor) -> Tensor:
        return self.student(batch.x_teacher)
