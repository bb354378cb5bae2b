"""Exponential moving average of a model's parameters, with foreach ops."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, decay: float) -> None:
    """``target_param <- decay * target_param + (1 - decay) * source_param`` for every parameter.

    Only parameters are averaged; buffers (BatchNorm statistics) are left to the target's own
    forward passes, as in the original Mean Teacher PyTorch code.

    References:
        Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017, Eq. (2).
    """
    target_params = list(target.parameters())
    source_params = list(source.parameters())
    if len(target_params) != len(source_params):
        raise ValueError("ema_update: the two models have different parameter lists")
    torch._foreach_mul_(target_params, decay)
    torch._foreach_add_(target_params, source_params, alpha=1.0 - decay)
