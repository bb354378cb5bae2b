"""Shared behaviour of consistency-regularization algorithms: the ramped weight and the distance."""

from __future__ import annotations

from torch import Tensor

from ssl_toolkit.algorithm import Batch, ConsistencyConfig, DataContext
from ssl_toolkit.losses import consistency_function
from ssl_toolkit.schedules import sigmoid_rampup


class ConsistencyMixin:
    """Gives an SSLAlgorithm whose Config is a ConsistencyConfig the ramped weight and the distance."""

    config: ConsistencyConfig
    context: DataContext

    def consistency_weight(self, step: int) -> float:
        ramp = sigmoid_rampup(step, self.config.rampup_steps(self.context))
        return self.config.max_weight(self.context) * ramp

    def consistency_loss(self, student_logits: Tensor, targets: Tensor, batch: Batch) -> Tensor:
        return consistency_function(self.config.consistency)(student_logits, targets)
