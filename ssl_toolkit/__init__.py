"""ssl-bench: a pluggable semi-supervised learning toolkit on PyTorch."""

from ssl_toolkit.algorithm import (
    AlgorithmConfig,
    Batch,
    ConsistencyAlgorithm,
    ConsistencyConfig,
    DataContext,
    SSLAlgorithm,
    StepInfo,
)
from ssl_toolkit.export import load_exported
from ssl_toolkit.registry import get_algorithm, list_algorithms, register_algorithm

__version__ = "0.1.0"

__all__ = [
    "AlgorithmConfig",
    "Batch",
    "ConsistencyAlgorithm",
    "ConsistencyConfig",
    "DataContext",
    "SSLAlgorithm",
    "StepInfo",
    "get_algorithm",
    "list_algorithms",
    "load_exported",
    "register_algorithm",
]
