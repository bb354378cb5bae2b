"""Loss functions shared by the algorithms, written from the formulas in REFERENCE.md."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

NO_LABEL = -1


def _full(x: Tensor) -> Tensor:
    """Half-precision logits (autocast) in float32, so every loss is summed at least in float32."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def masked_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy summed over labeled images (target != -1), divided by the whole batch size.

    Dividing by the full minibatch size (labeled + unlabeled) rather than the labeled count follows
    the original Mean Teacher PyTorch code; it keeps the supervised term's scale tied to the batch.
    """
    # ignore_index skips the unlabeled rows without a boolean gather (no host sync on a GPU);
    # the sum over no labeled row is 0, as it should be.
    summed = F.cross_entropy(_full(logits), targets, reduction="sum", ignore_index=NO_LABEL)
    return summed / logits.shape[0]


def softmax_mse(student_logits: Tensor, target_logits: Tensor) -> Tensor:
    """``sum((softmax(s) - softmax(t))^2) / num_classes / batch_size``.

    Gradients flow into whichever argument requires them: Mean Teacher passes a detached target,
    the Pi-model a target that keeps its graph.
    """
    if student_logits.shape != target_logits.shape:
        raise ValueError(f"softmax_mse: shapes differ {tuple(student_logits.shape)} vs {tuple(target_logits.shape)}")
    batch, classes = student_logits.shape
    diff = F.softmax(_full(student_logits), dim=1) - F.softmax(_full(target_logits), dim=1)
    return diff.pow(2).sum() / classes / batch


def softmax_kl(student_logits: Tensor, target_logits: Tensor) -> Tensor:
    """``KL(softmax(t) || softmax(s))`` summed over classes, averaged over the batch (paper Figure 4)."""
    target_log_probs = F.log_softmax(_full(target_logits), dim=1)
    student_log_probs = F.log_softmax(_full(student_logits), dim=1)
    return (target_log_probs.exp() * (target_log_probs - student_log_probs)).sum() / student_logits.shape[0]


def logit_distance(head1: Tensor, head2: Tensor) -> Tensor:
    """``sum((head1 - head2)^2) / num_classes / batch_size``: the Mean Teacher logit-distance cost."""
    batch, classes = head1.shape
    return (_full(head1) - _full(head2)).pow(2).sum() / classes / batch


def masked_consistency(name: str, student_logits: Tensor, target_probs: Tensor, mask: Tensor) -> Tensor:
    """The ``mse`` or ``kl`` consistency against target *probabilities*, over the images where ``mask``.

    Images outside the mask contribute nothing, but the sum is still divided by the whole batch
    size, as for :func:`softmax_mse` (Temporal Ensembling's images without an ensemble target yet).
    """
    batch, classes = student_logits.shape
    student_logits = _full(student_logits)
    weight = mask.to(student_logits.dtype).unsqueeze(1)
    if name == "kl":
        terms = target_probs * (torch.log(target_probs.clamp(min=1e-12)) - F.log_softmax(student_logits, dim=1))
        return (terms * weight).sum() / batch
    if name != "mse":
        raise ValueError(f"unknown consistency loss {name!r}; valid: mse, kl")
    diff = F.softmax(student_logits, dim=1) - target_probs
    return (diff.pow(2) * weight).sum() / classes / batch


def confident_pseudo_labels(logits: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Hard pseudo-labels ``argmax softmax(logits)`` and the mask of those whose probability is >= ``threshold``.

    Computed from detached logits, so no gradient flows into the labels (Lee 2013; Sohn et al. 2020,
    Eq. 4). ``threshold=0`` keeps every label.
    """
    confidence, labels = F.softmax(logits.detach().float(), dim=1).max(dim=1)
    return labels, confidence >= threshold


def kept_cross_entropy(logits: Tensor, labels: Tensor, keep: Tensor) -> Tensor:
    """``sum(keep * CE(logits, labels)) / len(logits)``: cross-entropy on the kept labels, averaged over all rows.

    Rows that are not kept count in the denominator, as in FixMatch's ``L_u`` (Sohn et al. 2020, Eq. 4).
    """
    if len(logits) == 0:
        return logits.sum() * 0.0
    per_row = F.cross_entropy(logits, labels, reduction="none")
    return (per_row * keep.to(per_row.dtype)).sum() / len(logits)


def mean_entropy(logits: Tensor) -> Tensor:
    """``mean_i H(softmax(logits_i))``, the entropy-minimisation term (Grandvalet & Bengio 2005)."""
    log_probs = F.log_softmax(logits, dim=1)
    return -(log_probs.exp() * log_probs).sum() / logits.shape[0]


CONSISTENCY_LOSSES = {"mse": softmax_mse, "kl": softmax_kl}


def consistency_function(name: str):
    """The consistency distance called ``name`` (``mse`` or ``kl``)."""
    try:
        return CONSISTENCY_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown consistency loss {name!r}; valid: {', '.join(CONSISTENCY_LOSSES)}") from None


__all__ = [
    "NO_LABEL",
    "masked_cross_entropy",
    "softmax_mse",
    "softmax_kl",
    "logit_distance",
    "masked_consistency",
    "confident_pseudo_labels",
    "kept_cross_entropy",
    "mean_entropy",
    "consistency_function",
]
