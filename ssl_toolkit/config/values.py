"""Reading values as the config expects them: YAML-like scalars, type checks, config files."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ssl_toolkit.errors import UserInputError
from ssl_toolkit.naming import closest
from ssl_toolkit.settings import check_value, settings_of


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2's exponent floats without a dot: ``1e-6`` and JSON's ``1e-06``."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def parse_scalar(text: str) -> Any:
    """Read a command-line value the way YAML would: ``0.99`` float, ``10`` int, ``true`` bool, ``null``."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args and (typing.get_origin(hint) in (typing.Union, types.UnionType)):
        return " or ".join(_type_name(a) for a in args) + " or null"
    return getattr(hint, "__name__", str(hint))


def coerce(where: str, key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the type ``hint``; ints are accepted as floats, nothing else is converted."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        for option in typing.get_args(hint):
            if option is type(None):
                continue
            try:
                return coerce(where, key, value, option)
            except UserInputError:
                continue
    elif origin in (list, dict):
        if isinstance(value, origin):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is bool or hint is str:
        if isinstance(value, hint):
            return value
    raise UserInputError(f"{where} {key}={value!r} has the wrong type; expected {_type_name(hint)}")


def check_keys(where: str, given: dict[str, Any], valid: list[str]) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        choices = ", ".join(sorted(valid)) if valid else "none (it takes no keys here)"
        raise UserInputError(f"{where}: unknown key {unknown[0]!r}{closest(unknown[0], valid)}; valid: {choices}")


def typed_values(where: str, values: dict[str, Any], cls: type, *, as_flag: bool = False) -> dict[str, Any]:
    """Check the keys, types and ranges of ``values`` against the declared fields of dataclass ``cls``.

    ``as_flag`` names a bad value by its flag (``--lr 0``), for values given on the command line.
    """
    infos = {info.name: info for info in settings_of(cls)}
    check_keys(where, values, [f.name for f in dataclasses.fields(cls)])
    typed = {}
    for key, value in values.items():
        typed[key] = coerce(where, key, value, infos[key].hint)
        check_value("" if as_flag else where, infos[key], typed[key], as_flag=as_flag)
    return typed


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A run config as JSON or YAML (a saved config.json works as is)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise UserInputError(f"--config {path}: cannot read it ({error.strerror})") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        raise UserInputError(f"--config {path}: not valid JSON or YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserInputError(f"--config {path}: expected a mapping of config keys, got {type(data).__name__}")
    return data
