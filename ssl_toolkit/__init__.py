"""ssl-bench: a pluggable semi-supervised learning toolkit on PyTorch.

Everything a plugin author or a notebook user touches is importable from here (docs/extending.md).
"""

from __future__ import annotations

import importlib
from typing import Any

from ssl_toolkit.algorithm import (
    AlgorithmConfig,
    Batch,
    ConsistencyAlgorithm,
    ConsistencyConfig,
    ConsistencyWeightConfig,
    DataContext,
    SSLAlgorithm,
    StepInfo,
)
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.export import load_exported
from ssl_toolkit.registry import get_algorithm, list_algorithms, register_algorithm
from ssl_toolkit.settings import setting

__version__ = "0.1.0"

# Imported on first use: they pull in the data readers, the trainer or timm.
_LAZY = {
    "ArrayRun": "ssl_toolkit.api",
    "train_on_arrays": "ssl_toolkit.api",
    "DatasetArrays": "ssl_toolkit.data.arrays",
    "register_dataset": "ssl_toolkit.data.sources",
    "register_policy": "ssl_toolkit.data.augment",
    "register_backbone": "ssl_toolkit.backbones",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ssl_toolkit' has no attribute {name!r}")


__all__ = [
    "AlgorithmConfig",
    "ArrayRun",
    "Batch",
    "ConsistencyAlgorithm",
    "ConsistencyConfig",
    "ConsistencyWeightConfig",
    "DataContext",
    "DatasetArrays",
    "SSLAlgorithm",
    "StepInfo",
    "UserInputError",
    "get_algorithm",
    "list_algorithms",
    "load_exported",
    "register_algorithm",
    "register_backbone",
    "register_dataset",
    "register_policy",
    "setting",
    "train_on_arrays",
]
