"""Pure schedule functions: consistency-weight ramp-up, learning-rate ramps, EMA decay.

Each takes the current position (step or epoch, as float) and the schedule's length and returns
a multiplier or value. They validate their input, so a mistyped length fails loudly instead of
silently producing a constant schedule.
"""

from __future__ import annotations

import math

# The papers' ConvNet runs ramp the consistency weight and the lr up over 40k of 150k steps (Laine &
# Aila: 80 of 300 epochs) and the lr down over the last 25k; CPU runs keep these shares of the run.
PAPER_RAMPUP_FRACTION = 40_000 / 150_000
PAPER_RAMPDOWN_FRACTION = 25_000 / 150_000


def _check_position(current: float, length: float, name: str) -> None:
    if length < 0:
        raise ValueError(f"{name}: length must be >= 0, got {length}")
    if current < 0:
        raise ValueError(f"{name}: position must be >= 0, got {current}")


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """Sigmoid-shaped ramp from 0 to 1: ``exp(-5 (1 - t/T)^2)`` for ``t < T``, then 1.

    References:
        Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017, Sec. 3.1;
        Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017, Appendix B.

    >>> round(sigmoid_rampup(0, 10), 6)
    0.006738
    >>> sigmoid_rampup(10, 10)
    1.0
    """
    _check_position(current, rampup_length, "sigmoid_rampup")
    if rampup_length == 0 or current >= rampup_length:
        return 1.0
    phase = 1.0 - current / rampup_length
    return float(math.exp(-5.0 * phase * phase))


def sigmoid_rampdown(current: float, total: float, rampdown_length: float) -> float:
    """Ramp-down ``exp(-12.5 p^2)`` over the last ``rampdown_length`` of ``total``; 1 before it.

    ``p`` goes from 0 at the start of the ramp-down to 1 at ``total``.

    References:
        Tarvainen & Valpola 2017, Appendix B.1 (the TensorFlow ConvNet runs); Laine & Aila 2017.
    """
    _check_position(current, total, "sigmoid_rampdown")
    if rampdown_length < 0 or rampdown_length > total:
        raise ValueError(f"sigmoid_rampdown: ramp-down length must lie in [0, {total}], got {rampdown_length}")
    start = total - rampdown_length
    if rampdown_length == 0 or current <= start:
        return 1.0
    p = min(1.0, (current - start) / rampdown_length)
    return float(math.exp(-12.5 * p * p))


def linear_rampup(current: float, rampup_length: float) -> float:
    """Linear warm-up from 0 to 1 over ``rampup_length``; used with SGD + cosine (Table 4 runs)."""
    _check_position(current, rampup_length, "linear_rampup")
    if rampup_length == 0 or current >= rampup_length:
        return 1.0
    return float(current / rampup_length)


def cosine_rampdown(current: float, length: float) -> float:
    """Cosine annealing ``0.5 (cos(pi t / D) + 1)`` from 1 at ``t=0`` to 0 at ``t=D``.

    References:
        Loshchilov & Hutter, "SGDR", ICLR 2017; used by the Mean Teacher PyTorch ResNet runs.
    """
    _check_position(current, length, "cosine_rampdown")
    if length == 0:
        raise ValueError("cosine_rampdown: length must be > 0")
    t = min(current, length)
    return float(0.5 * (math.cos(math.pi * t / length) + 1.0))


def ema_decay_at(step: int, decay: float) -> float:
    """Effective Mean Teacher EMA decay ``min(1 - 1/(step + 1), decay)``.

    At step 0 the teacher copies the student (decay 0); the true average of the weights so far is
    used until it would exceed ``decay``.

    References:
        Tarvainen & Valpola 2017, Sec. 3 and the original code's ``update_ema_variables``.
    """
    if step < 0:
        raise ValueError(f"ema_decay_at: step must be >= 0, got {step}")
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"ema_decay_at: decay must lie in [0, 1), got {decay}")
    return min(1.0 - 1.0 / (step + 1), decay)
