"""Error rates of the evaluated models, and validation-based model selection."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from ssl_toolkit.data.augment import Preprocess

EVAL_BATCH = 1000


@torch.inference_mode()
def error_rate(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    preprocess: Preprocess,
    logits_of: Callable[[object], Tensor] = lambda output: output,
    batch_size: int = EVAL_BATCH,
) -> float:
    """Top-1 error in percent of ``model`` in eval mode on uint8 ``images``; the mode is restored after.

    ``logits_of`` picks the classification logits from the model's output (the algorithm's
    ``class_logits``).
    """
    was_training = model.training
    model.eval()
    wrong = torch.zeros((), dtype=torch.long, device=images.device)
    try:
        for start in range(0, len(images), batch_size):
            logits = logits_of(model(preprocess(images[start : start + batch_size])))
            wrong += (logits.argmax(dim=1) != labels[start : start + batch_size]).sum()
    finally:
        model.train(was_training)
    return 100.0 * int(wrong) / max(1, len(images))


def best_by_validation(metrics: Iterable[dict]) -> dict[str, dict]:
    """For each evaluated model, the evaluation with the lowest validation error and its test error.

    Ties go to the earliest step; rows without a validation error (or a NaN one) are skipped. Test
    error never takes part in the choice.
    """
    best: dict[str, dict] = {}
    for row in metrics:
        val_errors = row.get("val_error") or {}
        test_errors = row.get("test_error") or {}
        if not isinstance(val_errors, dict) or not isinstance(test_errors, dict):
            continue
        for model, val_error in val_errors.items():
            if not _is_number(val_error) or val_error != val_error or not _is_number(test_errors.get(model)):
                continue
            if model not in best or val_error < best[model]["val_error"]:
                best[model] = {"step": row.get("step"), "val_error": float(val_error),
                               "test_error": float(test_errors[model])}
    return best


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
