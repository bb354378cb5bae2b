"""Temporal Ensembling (Laine & Aila, ICLR 2017): targets are a per-sample EMA of past predictions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.algorithm import Batch, ConsistencyConfig, DataContext, SSLAlgorithm, StepInfo, check_range
from ssl_toolkit.consistency import ConsistencyMixin
from ssl_toolkit.losses import NO_LABEL
from ssl_toolkit.registry import register_algorithm


@dataclass
class TemporalEnsemblingConfig(ConsistencyConfig):
    """Temporal Ensembling hyperparameters: ``α = 0.6`` and ``w_max = 30 * M / N`` (paper Sec. 3.1)."""

    label_fraction_scale: float = 30.0
    ensemble_momentum: float = 0.6

    def validate(self, context: DataContext) -> None:
        super().validate(context)
        check_range("ensemble_momentum", self.ensemble_momentum, 0.0, 1.0, high_open=True)


@register_algorithm("temporal_ensembling")
class TemporalEnsembling(ConsistencyMixin, SSLAlgorithm):
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

    def __init__(self, student: nn.Module, config: TemporalEnsemblingConfig, context: DataContext) -> None:
        super().__init__(student, config, context)
        n, c = context.pool_size, context.num_classes
        # Buffers, so the ensemble is checkpointed and moved to the device with the module.
        self.register_buffer("ensemble", torch.zeros(n, c))
        self.register_buffer("epoch_predictions", torch.zeros(n, c))
        self.register_buffer("seen_this_epoch", torch.zeros(n, dtype=torch.bool))
        self.register_buffer("fold_count", torch.zeros(n, dtype=torch.long))

    def teacher_targets(self, batch: Batch, student_logits: Tensor) -> Tensor:
        counts = self.fold_count[batch.index]
        correction = 1.0 - self.config.ensemble_momentum ** counts.clamp(min=1).to(self.ensemble.dtype)
        return (self.ensemble[batch.index] / correction.unsqueeze(1)).detach()

    def consistency_loss(self, student_logits: Tensor, targets: Tensor, batch: Batch) -> Tensor:
        has_target = (self.fold_count[batch.index] > 0).to(student_logits.dtype).unsqueeze(1)
        batch_size, classes = student_logits.shape
        if self.config.consistency == "kl":
            log_probs = F.log_softmax(student_logits, dim=1)
            terms = targets * (torch.log(targets.clamp(min=1e-12)) - log_probs)
            return (terms * has_target).sum() / batch_size
        diff = F.softmax(student_logits, dim=1) - targets
        return (diff.pow(2) * has_target).sum() / classes / batch_size

    @torch.no_grad()
    def post_step(self, info: StepInfo) -> None:
        # The unlabeled stream visits every pool image once per epoch, so record its predictions.
        from_unlabeled_stream = info.batch.y == NO_LABEL
        index = info.batch.index[from_unlabeled_stream]
        probs = F.softmax(info.student_logits[from_unlabeled_stream].float(), dim=1)
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
