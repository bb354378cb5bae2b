"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017): the teacher is an EMA of the student's weights."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ssl_toolkit.algorithm import Batch, ConsistencyConfig, DataContext, SSLAlgorithm, StepInfo, check_range
from ssl_toolkit.consistency import ConsistencyMixin
from ssl_toolkit.ema import ema_update
from ssl_toolkit.losses import logit_distance
from ssl_toolkit.registry import register_algorithm
from ssl_toolkit.schedules import ema_decay_at


@dataclass
class MeanTeacherConfig(ConsistencyConfig):
    """Mean Teacher hyperparameters (paper Sec. 3 and Appendix B.1).

    ``ema_decay`` applies during the consistency ramp-up and ``ema_decay_after_rampup`` after it
    (0.99 then 0.999 in the paper's ConvNet runs); ``ema_decay_after_rampup=None`` keeps
    ``ema_decay`` throughout, as the PyTorch ResNet runs do. ``logit_distance_cost > 0`` gives the
    student two heads: cross-entropy on the first, consistency on the second, and
    ``logit_distance_cost * sum((head1 - head2)^2) / C / B`` between them (paper Table 4, 0.01).
    """

    label_fraction_scale: float = 100.0
    ema_decay: float = 0.99
    ema_decay_after_rampup: float | None = 0.999
    logit_distance_cost: float = 0.0

    def validate(self, context: DataContext) -> None:
        super().validate(context)
        check_range("ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)
        if self.ema_decay_after_rampup is not None:
            check_range("ema_decay_after_rampup", self.ema_decay_after_rampup, 0.0, 1.0, high_open=True)
        check_range("logit_distance_cost", self.logit_distance_cost, 0.0, None)


@register_algorithm("mean_teacher")
class MeanTeacher(ConsistencyMixin, SSLAlgorithm):
    """Mean Teacher: pull the student toward an exponential moving average of its own weights.

    After every optimizer step ``θ' <- a θ' + (1 - a) θ`` with ``a = min(1 - 1/(step + 1), decay)``.
    The teacher sees its own, independently augmented view of each image, runs under ``no_grad``
    in train mode (so its BatchNorm statistics come from its own passes), and is evaluated beside
    the student.

    References:
        Tarvainen & Valpola, "Mean teachers are better role models: Weight-averaged consistency
        targets improve semi-supervised deep learning results", NeurIPS 2017.

    Example:
        ssl-bench run --algo mean_teacher --dataset digits --labels 50
    """

    Config = MeanTeacherConfig
    config: MeanTeacherConfig

    def __init__(self, student: nn.Module, config: MeanTeacherConfig, context: DataContext) -> None:
        super().__init__(student, config, context)
        self.teacher = copy.deepcopy(student)
        self.teacher.requires_grad_(False)

    @classmethod
    def backbone_options(cls, config: MeanTeacherConfig) -> dict[str, Any]:
        return {"num_heads": 2} if config.logit_distance_cost > 0 else {}

    def auxiliary_loss(self, student_output: Tensor | tuple[Tensor, ...]) -> Tensor | None:
        if self.config.logit_distance_cost <= 0:
            return None
        head1, head2 = student_output
        return self.config.logit_distance_cost * logit_distance(head1, head2)

    def teacher_targets(self, batch: Batch, student_logits: Tensor) -> Tensor:
        with torch.no_grad():
            return self.teacher(batch.x_teacher)

    def decay_at(self, step: int) -> float:
        after = self.config.ema_decay_after_rampup
        in_rampup = step < self.config.rampup_steps(self.context)
        decay = self.config.ema_decay if in_rampup or after is None else after
        return ema_decay_at(step, decay)

    def post_step(self, info: StepInfo) -> None:
        ema_update(self.teacher, self.student, self.decay_at(info.step))

    def eval_models(self) -> dict[str, nn.Module]:
        return {"student": self.student, "teacher": self.teacher}
