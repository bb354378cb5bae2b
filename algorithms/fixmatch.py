"""FixMatch (Sohn et al., NeurIPS 2020): confident weak-view predictions are labels for the strong view."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ssl_toolkit.algorithm import Batch, ConsistencyAlgorithm, ConsistencyWeightConfig
from ssl_toolkit.losses import confident_pseudo_labels, kept_cross_entropy
from ssl_toolkit.registry import register_algorithm
from ssl_toolkit.settings import setting


@dataclass
class FixMatchConfig(ConsistencyWeightConfig):
    """FixMatch hyperparameters (paper Sec. 4): λ_u = 1, τ = 0.95, no ramp-up.

    The paper's μ = 7 unlabeled images per labeled one is a batch setting:
    ``--labeled-batch-size B --batch-size 8B``.
    """

    label_fraction_scale: float = setting(1.0, "λ_u: w = λ_u x labeled share when consistency_weight is None",
                                          low=0.0, search="log:0.1:10")
    consistency_rampup: int | None = setting(0, "sigmoid ramp-up of the weight, in steps (FixMatch: none)", low=0)
    threshold: float = setting(0.95, "τ: keep a pseudo-label when its probability is at least this", low=0.0,
                               high=1.0, search="uniform:0.7:0.99")


@register_algorithm("fixmatch")
class FixMatch(ConsistencyAlgorithm):
    """FixMatch: the student's weak-view prediction, when confident, labels its strong view.

    ``L_u = mean over unlabeled images of 1(max p_weak >= τ) · CE(p_weak argmax, student(strong))``;
    the weak-view prediction is the student's own pass of this step, detached.

    References:
        Sohn et al., "FixMatch: Simplifying semi-supervised learning with consistency and
        confidence", NeurIPS 2020, Eq. (4).

    Example:
        ssl-bench run --algo fixmatch --dataset digits --labels 50
    """

    Config = FixMatchConfig
    config: FixMatchConfig
    views = {"student": "weak", "strong": "strong"}

    def teacher_targets(self, batch: Batch, output: Tensor) -> tuple[Tensor, Tensor]:
        return confident_pseudo_labels(output[batch.unlabeled], self.config.threshold)

    def consistency_loss(self, output: Tensor, targets: tuple[Tensor, Tensor], batch: Batch) -> Tensor:
        labels, confident = targets
        strong_logits = self.student(batch.view("strong")[batch.unlabeled])
        return kept_cross_entropy(strong_logits, labels, confident)
