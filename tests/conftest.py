import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_torch():
    # Each test starts from the same global RNG state, so test order never changes a result.
    torch.manual_seed(0)
    yield
