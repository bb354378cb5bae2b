"""Interpolation Consistency Training (Verma et al., IJCAI 2019) as an ssl-bench plugin.

The student's prediction at a mixup of two unlabeled images must match the same mixup of a mean
teacher's predictions at the two images.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.special import betaincinv
from torch import Tensor, nn

from ssl_toolkit import Batch, ConsistencyAlgorithm, ConsistencyConfig, DataContext, StepInfo, register_algorithm
from ssl_toolkit.ema import ema_update
from ssl_toolkit.losses import masked_consistency
from ssl_toolkit.schedules import ema_decay_at
from ssl_toolkit.settings import setting

# The consistency weight reaches its maximum a quarter of the way through the run (ICT's README).
ICT_RAMPUP_FRACTION = 0.25


@dataclass
class ICTConfig(ConsistencyConfig):
    """ICT hyperparameters: ``w_max = 100 × labeled share``, α = 1.0, EMA decay 0.999, softmax MSE."""

    label_fraction_scale: float = setting(100.0, "w_max = this x labeled share when consistency_weight is None",
                                          low=0.0, search="log:1:100")
    consistency_rampup: int | None = setting(None, "sigmoid ramp-up of the weight, in steps; None: 1/4 of the run",
                                             low=0)
    mixup_alpha: float = setting(1.0, "α of the mixing coefficient λ ~ Beta(α, α) (CIFAR-10: 1.0, SVHN: 0.1)",
                                 low=0.0, low_open=True, search="choice:0.1,0.2,0.5,1.0")
    ema_decay: float = setting(0.999, "EMA decay of the teacher", low=0.0, high=1.0, high_open=True,
                               search="choice:0.99,0.999")

    def rampup_steps(self, context: DataContext) -> int:
        if self.consistency_rampup is not None:
            return self.consistency_rampup
        return round(ICT_RAMPUP_FRACTION * context.total_steps)


def beta_sample(alpha: float, generator: torch.Generator) -> float:
    """λ ~ Beta(α, α) by inverting the CDF at one uniform drawn from ``generator`` (exact, and resumable)."""
    uniform = torch.rand((), generator=generator, device=generator.device, dtype=torch.float64).item()
    return float(betaincinv(alpha, alpha, uniform))


@register_algorithm("ict")
class ICT(ConsistencyAlgorithm):
    """ICT: ``student(λ u_i + (1-λ) u_j)`` is pulled toward ``λ teacher(u_i) + (1-λ) teacher(u_j)``.

    Each step pairs every unlabeled image with one of a random permutation of the others and mixes
    pairs with one λ ~ Beta(α, α), both drawn from the run's generator. The teacher is an EMA of the
    student, run under ``no_grad`` on the student's view (ICT uses one augmented view), evaluated too.

    References:
        Verma et al., "Interpolation Consistency Training for Semi-Supervised Learning", IJCAI 2019.

    Example:
        ssl-bench run --algo ict --dataset digits --labels 50
    """

    Config = ICTConfig
    config: ICTConfig
    views = {"student": "weak"}

    def __init__(self, student: nn.Module, config: ICTConfig, context: DataContext) -> None:
        super().__init__(student, config, context)
        self.teacher = copy.deepcopy(student)
        self.teacher.requires_grad_(False)

    def teacher_targets(self, batch: Batch, output: Tensor) -> tuple[Tensor, Tensor]:
        images = batch.view("student")[batch.unlabeled]
        lam = beta_sample(self.config.mixup_alpha, batch.generator)
        partner = torch.randperm(len(images), generator=batch.generator, device=images.device)
        with torch.no_grad():
            probs = F.softmax(self.teacher(images), dim=1)
        return lam * images + (1 - lam) * images[partner], lam * probs + (1 - lam) * probs[partner]

    def consistency_loss(self, output: Tensor, targets: tuple[Tensor, Tensor], batch: Batch) -> Tensor:
        mixed_images, mixed_probs = targets
        every_row = torch.ones(len(mixed_images), dtype=torch.bool, device=mixed_images.device)
        return masked_consistency(self.config.consistency, self.student(mixed_images), mixed_probs, every_row)

    def post_step(self, info: StepInfo) -> None:
        ema_update(self.teacher, self.student, ema_decay_at(info.steps_done, self.config.ema_decay))

    def eval_models(self) -> dict[str, nn.Module]:
        return {"student": self.student, "teacher": self.teacher}
