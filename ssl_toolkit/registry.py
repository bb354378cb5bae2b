"""Algorithm registry: ``@register_algorithm``, lookup by name, entry-point and module plugins."""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TypeVar

from ssl_toolkit.algorithm import SSLAlgorithm
from ssl_toolkit.errors import UserInputError

ENTRY_POINT_GROUP = "ssl_toolkit.algorithms"

_ALGORITHMS: dict[str, type[SSLAlgorithm]] = {}
_builtins_loaded = False

A = TypeVar("A", bound=type[SSLAlgorithm])


def register_algorithm(name: str) -> Callable[[A], A]:
    """Class decorator that registers an SSLAlgorithm under ``name``; a duplicate name raises."""

    def decorate(cls: A) -> A:
        if not (isinstance(cls, type) and issubclass(cls, SSLAlgorithm)):
            raise TypeError(f"@register_algorithm({name!r}) must decorate an SSLAlgorithm subclass, got {cls!r}")
        existing = _ALGORITHMS.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"algorithm name {name!r} is already registered by {existing.__module__}.{existing.__qualname__}"
            )
        cls.name = name
        _ALGORITHMS[name] = cls
        return cls

    return decorate


def _load_builtins_and_plugins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    importlib.import_module("ssl_toolkit.algorithms")
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        # A plugin that fails to import raises: a silently missing algorithm is worse.
        entry.load()


def load_plugin(module: str) -> None:
    """Import ``module`` so that its ``@register_algorithm`` classes join the registry."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        raise UserInputError(f"--plugin {module!r}: module not found ({error})") from None


def list_algorithms(pattern: str = "*") -> list[str]:
    """Registered algorithm names matching a shell-style wildcard, sorted."""
    _load_builtins_and_plugins()
    return sorted(name for name in _ALGORITHMS if fnmatch.fnmatch(name, pattern))


def get_algorithm(name: str) -> type[SSLAlgorithm]:
    """The algorithm class registered as ``name``; an unknown name lists the known ones."""
    _load_builtins_and_plugins()
    try:
        return _ALGORITHMS[name]
    except KeyError:
        raise UserInputError(
            f"unknown algorithm {name!r}; valid: {', '.join(list_algorithms())}"
        ) from None
