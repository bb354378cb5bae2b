"""Temporal Ensembling (Laine & Aila, ICLR 2017): targets are a per-sample EMA of past predictions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.algorithm import Batch, ConsistencyAlgorithm, ConsistencyConfig, DataContext, StepInfo
from ssl_toolkit.losses import masked_consistency
from ssl_toolkit.registry import register_algorithm
from ssl_toolkit.settings import setting


@dataclass
class TemporalEnsemblingConfig(ConsistencyConfig):
    """Temporal Ensembling hyperparameters: ``α = 0.6`` and ``w_max = 30 * M / N`` (paper Sec. 3.1)."""

    label_fraction_scale: float = setting(30.0, "w_max = this x labeled share when consistency_weight is None",
                                          low=0.0)
    ensemble_momentum: float = setting(0.6, "α of the per-sample ensemble Z <- α Z + (1 - α) z", low=0.0,
                                       high=1.0, high_open=True, search="uniform:0.5:0.9")


@register_algorithm("temporal_ensembling")
class TemporalEnsembling(ConsistencyAlgorithm):
    """Temporal Ensembling: one network pass per step; targets come from a per-sample buffer.

    Predictions ``z`` made during an epoch (a pass over the unlabeled stream) are folded into the
    ensemble once at the epoch's end, ``Z <- α Z + (1 - α) z``, and the target for image ``i`` is
    ``Z_i / (1 - α^n_i)``, with ``n_i`` the number of folds that included it (the startup bias
    correction; ``n_i = epoch + 1`` when every image is seen every epoch). Images without any fold
    yet have no target, which gives the paper's zero weight during the first epoch.

    References:
        Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017, Sec. 2.2.

    Example:
        ssl-bench run --algo temporal_ensembling --dataset digits --labels 50
    """

    Config = TemporalEnsemblingConfig
    config: TemporalEnsemblingConfig
    views = {"student": "weak"}

    def __init__(self, student: nn.Module, config: TemporalEnsemblingConfig, context: DataContext) -> None:
        super().__init__(student, config, context)
        n, c = context.pool_size, context.num_classes
        # Buffers, so the ensemble is checkpointed and moved to the device with the module.
        self.register_buffer("ensemble", torch.zeros(n, c))
        self.register_buffer("epoch_predictions", torch.zeros(n, c))
        self.register_buffer("seen_this_epoch", torch.zeros(n, dtype=torch.bool))
        self.register_buffer("fold_count", torch.zeros(n, dtype=torch.long))

    def teacher_targets(self, batch: Batch, output: Tensor) -> Tensor:
        counts = self.fold_count[batch.index]
        correction = 1.0 - self.config.ensemble_momentum ** counts.clamp(min=1).to(self.ensemble.dtype)
        return (self.ensemble[batch.index] / correction.unsqueeze(1)).detach()

    def consistency_loss(self, output: Tensor, targets: Tensor, batch: Batch) -> Tensor:
        has_target = self.fold_count[batch.index] > 0
        return masked_consistency(self.config.consistency, output, targets, has_target)

    @torch.no_grad()
    def post_step(self, info: StepInfo) -> None:
        # The unlabeled stream visits every pool image once per epoch, so record its predictions;
        # gathered, so that every process of a torchrun run holds the same ensemble.
        unlabeled_rows = info.batch.unlabeled
        index = info.gather(info.batch.index[unlabeled_rows])
        probs = info.gather(F.softmax(info.student_logits[unlabeled_rows].float(), dim=1))
        self.epoch_predictions[index] = probs
        self.seen_this_epoch[index] = True
        if info.epoch_ended:
            self.fold_epoch()

    @torch.no_grad()
    def fold_epoch(self) -> None:
        """Fold this epoch's predictions into the ensemble: ``Z <- α Z + (1 - α) z``."""
        seen = self.seen_this_epoch
        alpha = self.config.ensemble_momentum
        self.ensemble[seen] = alpha * self.ensemble[seen] + (1.0 - alpha) * self.epoch_predictions[seen]
        self.fold_count[seen] += 1
        seen.zero_()
