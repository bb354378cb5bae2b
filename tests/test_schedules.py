import math

import pytest

from ssl_toolkit.schedules import (
    cosine_rampdown,
    ema_decay_at,
    linear_rampup,
    sigmoid_rampdown,
    sigmoid_rampup,
)


def test_sigmoid_rampup_matches_hand_values():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5.0))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5.0 * 0.25))
    assert sigmoid_rampup(100, 100) == 1.0
    assert sigmoid_rampup(250, 100) == 1.0
    assert sigmoid_rampup(3, 0) == 1.0


def test_sigmoid_rampdown_is_one_before_and_exp_during_the_last_stretch():
    assert sigmoid_rampdown(0, 150, 25) == 1.0
    assert sigmoid_rampdown(125, 150, 25) == 1.0
    assert sigmoid_rampdown(137.5, 150, 25) == pytest.approx(math.exp(-12.5 * 0.25))
    assert sigmoid_rampdown(150, 150, 25) == pytest.approx(math.exp(-12.5))


def test_cosine_and_linear_ramps():
    assert cosine_rampdown(0, 10) == 1.0
    assert cosine_rampdown(5, 10) == pytest.approx(0.5)
    assert cosine_rampdown(10, 10) == pytest.approx(0.0)
    assert linear_rampup(2, 8) == 0.25


def test_ema_decay_is_true_average_until_it_reaches_the_cap():
    assert ema_decay_at(0, 0.99) == 0.0
    assert ema_decay_at(1, 0.99) == 0.5
    assert ema_decay_at(9, 0.99) == pytest.approx(0.9)
    assert ema_decay_at(1000, 0.99) == 0.99


@pytest.mark.parametrize(
    "call",
    [lambda: sigmoid_rampup(-1, 10), lambda: sigmoid_rampup(1, -10), lambda: sigmoid_rampdown(1, 10, 20),
     lambda: ema_decay_at(1, 1.0), lambda: ema_decay_at(-1, 0.5), lambda: cosine_rampdown(1, 0)],
)
def test_schedules_reject_bad_positions_and_lengths(call):
    with pytest.raises(ValueError):
        call()
