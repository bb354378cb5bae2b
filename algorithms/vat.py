"""Virtual Adversarial Training (Miyato et al., TPAMI 2018): predictions must resist the worst small perturbation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ssl_toolkit.algorithm import Batch, ConsistencyAlgorithm, ConsistencyWeightConfig
from ssl_toolkit.forward import forward_without_updating_buffers
from ssl_toolkit.losses import mean_entropy, softmax_kl
from ssl_toolkit.registry import register_algorithm
from ssl_toolkit.settings import setting


@dataclass
class VATConfig(ConsistencyWeightConfig):
    """VAT hyperparameters: α = 1 and no ramp-up (Miyato et al.), ξ = 1e-6, ε = 6.0 (CIFAR-10 with ZCA).

    ε is an L2 norm over the whole input, so it is set per data set: the presets say which.
    """

    label_fraction_scale: float = setting(1.0, "α: w = α x labeled share when consistency_weight is None",
                                          low=0.0, search="log:0.1:10")
    consistency_rampup: int | None = setting(0, "sigmoid ramp-up of the weight, in steps (Miyato et al.: none)",
                                             low=0)
    epsilon: float = setting(6.0, "ε: L2 norm of the adversarial perturbation of each input", low=0.0,
                             low_open=True, search="log:0.3:10")
    xi: float = setting(1e-6, "ξ: L2 norm of the power iteration's finite-difference step", low=0.0, low_open=True)
    entmin_weight: float = setting(0.0, "entropy minimisation on the predictions, relative to the CE (VAT+EntMin: 1)",
                                   low=0.0, search="choice:0,1")


def unit_directions(d: Tensor) -> Tensor:
    """Each image's ``d`` scaled to L2 norm 1 (first by its largest entry, so tiny gradients do not underflow)."""
    dims = tuple(range(1, d.dim()))
    d = d / d.abs().amax(dim=dims, keepdim=True).clamp(min=1e-12)
    return d / d.pow(2).sum(dim=dims, keepdim=True).sqrt().clamp(min=1e-12)


@register_algorithm("vat")
class VAT(ConsistencyAlgorithm):
    """VAT: ``KL(p(x) || p(x + r_adv))`` with ``r_adv`` found by one power-iteration step.

    ``d ~ N(0, I)`` from the run's generator; ``g = ∇_d KL(p(x) || p(x + ξ d/|d|))``;
    ``r_adv = ε g/|g|``, per image. The clean predictions are the student's pass of this step,
    detached; the perturbed passes run in train mode without updating BatchNorm statistics, as in
    the original code. Every image of the batch is regularized (the paper's sum over labeled and
    unlabeled inputs). ``entmin_weight`` adds the mean prediction entropy (VAT+EntMin).

    References:
        Miyato et al., "Virtual adversarial training: a regularization method for supervised and
        semi-supervised learning", IEEE TPAMI 2018, Sec. 3.3 and Eq. (12).

    Example:
        ssl-bench run --algo vat --dataset digits --labels 50
    """

    Config = VATConfig
    config: VATConfig
    views = {"student": "weak"}

    def teacher_targets(self, batch: Batch, output: Tensor) -> Tensor:
        return output.detach()

    def consistency_loss(self, output: Tensor, targets: Tensor, batch: Batch) -> Tensor:
        x = batch.view("student")
        r_adv = self.adversarial_perturbation(x, targets, batch.generator)
        return softmax_kl(forward_without_updating_buffers(self.student, x + r_adv), targets)

    def adversarial_perturbation(self, x: Tensor, clean_logits: Tensor, generator: torch.Generator) -> Tensor:
        d = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        d = (self.config.xi * unit_directions(d)).requires_grad_(True)
        with torch.enable_grad():
            distance = softmax_kl(forward_without_updating_buffers(self.student, x + d), clean_logits)
            (gradient,) = torch.autograd.grad(distance, d)
        return self.config.epsilon * unit_directions(gradient)

    def auxiliary_loss(self, output: Tensor) -> Tensor | None:
        if self.config.entmin_weight == 0:
            return None
        # The trainer's CE is divided by the whole batch: scale by the labeled share to keep the paper's ratio.
        return self.config.entmin_weight * self.context.labeled_share * mean_entropy(output)
