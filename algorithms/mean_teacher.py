"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017): the teacher is an EMA of the student's weights."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ssl_toolkit.algorithm import Batch, ConsistencyAlgorithm, ConsistencyConfig, DataContext, Output, StepInfo
from ssl_toolkit.ema import ema_update
from ssl_toolkit.losses import logit_distance
from ssl_toolkit.registry import register_algorithm
from ssl_toolkit.schedules import ema_decay_at
from ssl_toolkit.settings import setting


@dataclass
class MeanTeacherConfig(ConsistencyConfig):
    """Mean Teacher hyperparameters (paper Sec. 3 and Appendix B.1).

    ``ema_decay`` applies during the consistency ramp-up and ``ema_decay_after_rampup`` after it
    (0.99 then 0.999 in the paper's ConvNet runs); ``ema_decay_after_rampup=None`` keeps
    ``ema_decay`` throughout, as the PyTorch ResNet runs do. ``logit_distance_cost > 0`` gives the
    student two heads: cross-entropy on the first, consistency on the second, and
    ``logit_distance_cost * sum((head1 - head2)^2) / C / B`` between them (paper Table 4, 0.01).
    """

    label_fraction_scale: float = setting(100.0, "w_max = this x labeled share when consistency_weight is None",
                                          low=0.0)
    ema_decay: float = setting(0.99, "EMA decay of the teacher during the consistency ramp-up", low=0.0, high=1.0,
                               high_open=True, search="choice:0.95,0.99,0.999")
    ema_decay_after_rampup: float | None = setting(0.999, "EMA decay after the ramp-up; None keeps ema_decay",
                                                   low=0.0, high=1.0, high_open=True)
    logit_distance_cost: float = setting(0.0, "> 0: two student heads and this cost on their distance", low=0.0,
                                         search="choice:0,0.01")


class TwoHeads(nn.Module):
    """A backbone with a second, independently initialized copy of its classifier on the same features.

    ``forward`` returns ``(head1, head2)``: the backbone's own logits and the second head's. It works
    for any timm model, through timm's ``forward_features``/``forward_head(pre_logits=True)``.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.second_head = copy.deepcopy(backbone.get_classifier())
        for module in self.second_head.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        return self.backbone.get_classifier()(features), self.second_head(features)


@register_algorithm("mean_teacher")
class MeanTeacher(ConsistencyAlgorithm):
    """Mean Teacher: pull the student toward an exponential moving average of its own weights.

    After every optimizer step ``θ' <- a θ' + (1 - a) θ`` with ``a = min(1 - 1/(steps_done + 1),
    decay)``. The teacher sees its own, independently augmented view of each image, runs under
    ``no_grad`` in train mode (so its BatchNorm statistics come from its own passes), and is
    evaluated beside the student.

    References:
        Tarvainen & Valpola, "Mean teachers are better role models: Weight-averaged consistency
        targets improve semi-supervised deep learning results", NeurIPS 2017.

    Example:
        ssl-bench run --algo mean_teacher --dataset digits --labels 50
    """

    Config = MeanTeacherConfig
    config: MeanTeacherConfig
    views = {"student": "weak", "teacher": "weak"}

    def __init__(self, student: nn.Module, config: MeanTeacherConfig, context: DataContext) -> None:
        if config.logit_distance_cost > 0:
            student = TwoHeads(student)
        super().__init__(student, config, context)
        self.teacher = copy.deepcopy(student)
        self.teacher.requires_grad_(False)

    @property
    def two_heads(self) -> bool:
        return self.config.logit_distance_cost > 0

    def class_logits(self, output: Output) -> Tensor:
        return output[0] if self.two_heads else output

    def teacher_targets(self, batch: Batch, output: Output) -> Tensor:
        with torch.no_grad():
            # The target is the teacher's classification head (head 1 of two).
            return self.class_logits(self.teacher(batch.view("teacher")))

    def consistency_loss(self, output: Output, targets: Tensor, batch: Batch) -> Tensor:
        # With two heads, head 2 takes the consistency term and head 1 the cross-entropy.
        return super().consistency_loss(output[1] if self.two_heads else output, targets, batch)

    def auxiliary_loss(self, output: Output) -> Tensor | None:
        if not self.two_heads:
            return None
        return self.config.logit_distance_cost * logit_distance(*output)

    def decay_at(self, steps_done: int) -> float:
        after = self.config.ema_decay_after_rampup
        in_rampup = steps_done < self.config.rampup_steps(self.context)
        decay = self.config.ema_decay if in_rampup or after is None else after
        return ema_decay_at(steps_done, decay)

    def post_step(self, info: StepInfo) -> None:
        ema_update(self.teacher, self.student, self.decay_at(info.steps_done))

    def eval_models(self) -> dict[str, nn.Module]:
        return {"student": self.student, "teacher": self.teacher}
