"""Algorithm registry: ``@register_algorithm``, lookup by name, entry-point and ``--plugin`` plugins."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import TypeVar

from ssl_toolkit.algorithm import SSLAlgorithm
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.naming import closest

ENTRY_POINT_GROUP = "ssl_toolkit.algorithms"

_ALGORITHMS: dict[str, type[SSLAlgorithm]] = {}
_builtins_loaded = False
_plugins_loaded: set[str] = set()

A = TypeVar("A", bound=type[SSLAlgorithm])


def register_algorithm(name: str) -> Callable[[A], A]:
    """Class decorator that registers an SSLAlgorithm under ``name``; a duplicate name raises.

    The class is checked as it is registered (:meth:`SSLAlgorithm.check_declaration`), so a
    mistake in its declared views or config fails at import, naming the class.
    """

    def decorate(cls: A) -> A:
        if not (isinstance(cls, type) and issubclass(cls, SSLAlgorithm)):
            raise UserInputError(f"@register_algorithm({name!r}) must decorate an SSLAlgorithm subclass, got {cls!r}")
        existing = _ALGORITHMS.get(name)
        if existing is not None and existing is not cls:
            raise UserInputError(
                f"algorithm name {name!r} is already registered by {existing.__module__}.{existing.__qualname__}; "
                f"{cls.__module__}.{cls.__qualname__} needs another name"
            )
        cls.check_declaration()
        cls.name = name
        _ALGORITHMS[name] = cls
        return cls

    return decorate


@contextmanager
def registered(cls: type[SSLAlgorithm]) -> Iterator[str]:
    """The name ``cls`` is registered under; an unregistered class is registered for the ``with`` block only.

    The conformance checks use it, so a plugin author can check a class before choosing its name,
    and tests can check deliberately broken classes without leaving them in the registry.
    """
    _load_builtins_and_plugins()
    if cls.name and _ALGORITHMS.get(cls.name) is cls:
        yield cls.name
        return
    name = f"unregistered.{cls.__module__}.{cls.__qualname__}"
    had_own_name = "name" in cls.__dict__
    previous = cls.name
    register_algorithm(name)(cls)
    try:
        yield name
    finally:
        del _ALGORITHMS[name]
        if had_own_name:
            cls.name = previous
        else:
            del cls.name


def _load_builtins_and_plugins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    importlib.import_module("ssl_toolkit.algorithms")
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        # A plugin that fails to import raises: a silently missing algorithm is worse.
        _import_plugin(entry.value, lambda entry=entry: entry.load())


def _import_plugin(name: str, load: Callable[[], object]) -> None:
    try:
        load()
    except UserInputError as error:
        raise UserInputError(f"plugin {name!r}: {error}") from None
    except Exception as error:  # a plugin's own bug: name the plugin and the real cause, in one line
        where = ""
        tb = error.__traceback__
        while tb is not None:
            frame_file = tb.tb_frame.f_code.co_filename
            where = f" at {Path(frame_file).name}:{tb.tb_lineno}"
            tb = tb.tb_next
        detail = str(error).splitlines()[0] if str(error) else ""
        raise UserInputError(f"plugin {name!r} failed to import: {type(error).__name__}: {detail}{where}") from None


def load_plugin(module: str) -> None:
    """Import ``module`` (a module name, found from the current folder too, or a ``.py`` file path)
    so that its registered algorithms, data sets and backbones join the registries.

    Errors name the plugin and the real cause: not found, or the exception its own import raised.
    """
    if module in _plugins_loaded:
        return
    path = Path(module)
    if module.endswith(".py") or path.is_file():
        if not path.is_file():
            raise UserInputError(f"--plugin {module!r}: no such file")
        name = path.stem
        spec = importlib.util.spec_from_file_location(name, path.resolve())
        if spec is None or spec.loader is None:
            raise UserInputError(f"--plugin {module!r}: not a Python file")

        def load() -> None:
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[name] = loaded
            try:
                spec.loader.exec_module(loaded)
            except BaseException:
                sys.modules.pop(name, None)
                raise

        _import_plugin(module, load)
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            # ``python -m`` and console scripts leave the current folder off the path; a plugin module
            # sitting next to the user is what ``--plugin my_module`` means.
            sys.path.insert(0, str(Path.cwd()))
        if importlib.util.find_spec(module.split(".")[0]) is None:
            raise UserInputError(f"--plugin {module!r}: module not found (looked in the current folder and on "
                                 f"the Python path); give a module name or a .py file")
        _import_plugin(module, lambda: importlib.import_module(module))
    _plugins_loaded.add(module)


def load_plugins(modules: Iterable[str]) -> None:
    """:func:`load_plugin` for each module, in order."""
    for module in modules:
        load_plugin(module)


def list_algorithms(pattern: str = "*") -> list[str]:
    """Registered algorithm names matching a shell-style wildcard, sorted."""
    _load_builtins_and_plugins()
    return sorted(name for name in _ALGORITHMS if fnmatch.fnmatch(name, pattern))


def get_algorithm(name: str) -> type[SSLAlgorithm]:
    """The algorithm class registered as ``name``; an unknown name suggests the closest ones."""
    _load_builtins_and_plugins()
    try:
        return _ALGORITHMS[name]
    except KeyError:
        known = list_algorithms()
        raise UserInputError(f"unknown algorithm {name!r}{closest(name, known)}; valid: {', '.join(known)}") from None
