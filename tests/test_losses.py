import numpy as np
import pytest
import torch

from ssl_toolkit.ema import ema_update
from ssl_toolkit.losses import logit_distance, masked_cross_entropy, softmax_kl, softmax_mse


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_softmax_mse_matches_independent_numpy_formula():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    expected = ((_softmax(s) - _softmax(t)) ** 2).sum() / 3 / 4
    got = softmax_mse(torch.tensor(s), torch.tensor(t))
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_softmax_kl_matches_independent_numpy_formula():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    p, q = _softmax(t), _softmax(s)
    expected = (p * (np.log(p) - np.log(q))).sum() / 5
    assert float(softmax_kl(torch.tensor(s), torch.tensor(t))) == pytest.approx(expected, rel=1e-10)


def test_masked_cross_entropy_sums_labeled_and_divides_by_whole_batch():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 5.0], [1.0, 1.0]])
    targets = torch.tensor([0, 1, -1, -1])
    ce0 = -np.log(np.exp(2) / (np.exp(2) + 1))
    ce1 = -np.log(np.exp(1) / (np.exp(1) + 1))
    assert float(masked_cross_entropy(logits, targets)) == pytest.approx((ce0 + ce1) / 4)


def test_masked_cross_entropy_of_unlabeled_batch_is_zero_with_a_graph():
    logits = torch.randn(3, 5, requires_grad=True)
    loss = masked_cross_entropy(logits, torch.full((3,), -1))
    assert loss.item() == 0.0 and loss.requires_grad


def test_logit_distance_formula():
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])
    assert float(logit_distance(a, b)) == pytest.approx(5.0 / 2 / 1)


def test_ema_update_moves_parameters_by_hand_computed_amount_and_leaves_buffers():
    target, source = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        target.weight.copy_(torch.tensor([1.0, 2.0]))
        source.weight.copy_(torch.tensor([3.0, 6.0]))
        source.running_mean.fill_(7.0)
    ema_update(target, source, decay=0.75)
    assert torch.allclose(target.weight, torch.tensor([0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * 6]))
    assert torch.equal(target.running_mean, torch.zeros(2))
