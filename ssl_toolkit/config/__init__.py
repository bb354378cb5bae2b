"""The run config: its declared fields (:mod:`.run_config`), presets, and resolution of the layers."""

from ssl_toolkit.config.presets import PRESET_DIR, Preset, get_preset, list_presets
from ssl_toolkit.config.resolve import resolve_run_config
from ssl_toolkit.config.run_config import (
    CONFIG_KEYS,
    EXECUTION_KEYS,
    IDENTITY_KEYS,
    RESUMABLE_KEYS,
    Difference,
    RunConfig,
    differences,
)
from ssl_toolkit.config.values import parse_scalar, read_config_file

__all__ = [
    "CONFIG_KEYS",
    "EXECUTION_KEYS",
    "IDENTITY_KEYS",
    "PRESET_DIR",
    "RESUMABLE_KEYS",
    "Difference",
    "Preset",
    "RunConfig",
    "differences",
    "get_preset",
    "list_presets",
    "parse_scalar",
    "read_config_file",
    "resolve_run_config",
]
