"""Error rates of the evaluated models, and validation-based model selection."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssl_toolkit.data.augment import Normalizer


def class_logits(output: Tensor | tuple[Tensor, ...]) -> Tensor:
    """The classification logits of a model output (the first head of a two-head model)."""
    return output[0] if isinstance(output, tuple) else output


def consistency_logits(output: Tensor | tuple[Tensor, ...]) -> Tensor:
    """The logits the consistency term compares: the last head (the only one of a one-head model)."""
    return output[-1] if isinstance(output, tuple) else output


@torch.no_grad()
def error_rate(
    model: nn.Module, images: Tensor, labels: Tensor, normalizer: Normalizer, batch_size: int = 500
) -> float:
    """Top-1 error in percent of ``model`` in eval mode on uint8 ``images``; the mode is restored after."""
    was_training = model.training
    model.eval()
    wrong = 0
    try:
        for start in range(0, len(images), batch_size):
            x = normalizer(images[start : start + batch_size])
            logits = class_logits(model(x))
            wrong += int((logits.argmax(dim=1) != labels[start : start + batch_size]).sum())
    finally:
        model.train(was_training)
    return 100.0 * wrong / max(1, len(images))


def best_by_validation(metrics: list[dict]) -> dict[str, dict]:
    """For each evaluated model, the evaluation with the lowest validation error and its test error.

    Ties go to the earliest step. Test error never takes part in the choice.
    """
    best: dict[str, dict] = {}
    for row in metrics:
        for model, val_error in row.get("val_error", {}).items():
            if val_error is None:
                continue
            if model not in best or val_error < best[model]["val_error"]:
                best[model] = {"step": row["step"], "val_error": val_error, "test_error": row["test_error"][model]}
    return best
