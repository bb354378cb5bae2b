"""Optimizers and learning-rate schedules of the paper settings."""

from __future__ import annotations

import torch
from torch import nn

from ssl_toolkit.config import RunConfig
from ssl_toolkit.schedules import cosine_rampdown, linear_rampup, sigmoid_rampdown, sigmoid_rampup


def build_optimizer(config: RunConfig, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam (ConvNet runs) or SGD with Nesterov momentum (ResNet runs), from the run config."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(
        parameters, lr=config.lr, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay
    )


def lr_multiplier(config: RunConfig, step: int) -> float:
    """Learning-rate factor at ``step``.

    ``ramp``: sigmoid ramp-up over ``lr_rampup`` steps and ``exp(-12.5 p^2)`` ramp-down over the
    last ``lr_rampdown`` steps (Tarvainen & Valpola 2017, Appendix B.1).
    ``cosine``: linear warm-up over ``lr_rampup`` steps, then ``0.5 (cos(π t / D) + 1)`` with
    ``D = lr_rampdown`` (the PyTorch ResNet runs, Appendix B.2).
    """
    if config.lr_schedule == "cosine":
        return linear_rampup(step, config.lr_rampup) * cosine_rampdown(step, config.lr_rampdown)
    return sigmoid_rampup(step, config.lr_rampup) * sigmoid_rampdown(step, config.steps, config.lr_rampdown)


def apply_schedule(optimizer: torch.optim.Optimizer, config: RunConfig, step: int) -> float:
    """Set the learning rate (and Adam's β1) for ``step``; returns the lr.

    β1 follows the ramp-down ``r``: ``r * beta1 + (1 - r) * beta1_rampdown``, as the original
    TensorFlow code interpolates 0.9 toward 0.5.
    """
    lr = config.lr * lr_multiplier(config, step)
    rampdown = sigmoid_rampdown(step, config.steps, config.lr_rampdown) if config.lr_schedule == "ramp" else 1.0
    for group in optimizer.param_groups:
        group["lr"] = lr
        if "betas" in group:
            beta1 = rampdown * config.beta1 + (1.0 - rampdown) * config.beta1_rampdown
            group["betas"] = (beta1, group["betas"][1])
    return lr
