"""Forward passes that must leave a model's state as it was."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def forward_without_updating_buffers(model: nn.Module, *inputs: Any) -> Any:
    """``model(*inputs)`` in the model's current mode, with its buffers left untouched.

    Layers in train mode still normalize with the batch's own statistics, but the running averages
    (BatchNorm's ``running_mean``/``running_var``, counters, any custom layer's buffers) are updated
    on copies that are thrown away. Gradients reach the parameters as in a plain call. This is VAT's
    ``update_batch_stats=False`` for the extra passes on perturbed inputs (Miyato et al.'s code),
    written for any network: the copies, not the model's own buffers, are what the graph saves, so
    no in-place restore can break the backward pass.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).train()
        >>> before = net[1].running_mean.clone()
        >>> _ = forward_without_updating_buffers(net, torch.randn(8, 3))
        >>> torch.equal(net[1].running_mean, before)
        True
    """
    copies = {name: buffer.clone() for name, buffer in model.named_buffers()}
    return torch.func.functional_call(model, copies, inputs)
