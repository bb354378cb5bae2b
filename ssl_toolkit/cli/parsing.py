"""Argument parsing shared by every command: one parser class, and the run flags generated from RunConfig."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable, Iterable
from typing import Any

from ssl_toolkit.config import RunConfig, parse_scalar
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.settings import Role, SettingInfo, settings_of


class _DefaultsFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to a flag's help unless the help already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default:" not in text and action.option_strings and action.default not in (None, False, [],
                                                                                           argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


class OneLineParser(argparse.ArgumentParser):
    """argparse that refuses abbreviated flags and turns a usage error into one line and exit code 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserInputError(f"{self.prog}: {message}")


def _number_parser(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None

    parse.__name__ = kind.__name__
    return parse


def _help(info: SettingInfo) -> str:
    if info.default_text is not None and info.default is None:
        default = info.default_text
    elif info.default in ({}, []):
        default = "none"
    else:
        default = info.default
    choices = f" ({', '.join(info.choices)})" if info.choices else ""
    # "%" would be read as a format directive by argparse's help formatter.
    return f"{info.help}{choices} (default: {default})".replace("%", "%%")


def add_config_flags(parser: argparse.ArgumentParser, roles: Iterable[Role] = tuple(Role),
                     exclude: Iterable[str] = ()) -> None:
    """One flag per RunConfig field whose role is in ``roles``, help and default from its declaration.

    Every flag defaults to None (not given), so only what the user typed reaches the config layers.
    """
    roles, skip = set(roles), set(exclude)
    group = parser.add_argument_group("run settings")
    for info in settings_of(RunConfig):
        if info.role not in roles or info.name in skip:
            continue
        flag, help_text = info.flag_name, _help(info)
        common = {"dest": info.name, "default": None, "help": help_text}
        if info.name == "hparams":
            group.add_argument(flag, dest="sets", action="append", default=[], metavar="KEY=VALUE",
                               help=help_text)
        elif typing.get_origin(info.base_type) is list:
            metavar = "{" + ",".join(info.choices) + "}" if info.choices else info.flag_name.lstrip("-").upper()
            group.add_argument(flag, action="append", metavar=metavar, choices=info.choices, **common)
        elif info.base_type is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif info.base_type in (int, float):
            metavar = info.base_type.__name__.upper()
            group.add_argument(flag, type=_number_parser(info.base_type), metavar=metavar, **common)
        else:
            group.add_argument(flag, metavar="NAME" if not info.choices else "{" + ",".join(info.choices) + "}",
                               **common)


def parse_sets(sets: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as a hyperparameter mapping, values read as YAML scalars."""
    hparams: dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserInputError(f"--set {item!r} is not KEY=VALUE (e.g. --set ema_decay=0.999)")
        hparams[key.strip()] = parse_scalar(value)
    return hparams


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig values given on the command line (flags left out are absent, not None)."""
    values = {info.name: getattr(args, info.name) for info in settings_of(RunConfig)
              if getattr(args, info.name, None) is not None}
    hparams = parse_sets(getattr(args, "sets", None) or [])
    if hparams:
        values["hparams"] = hparams
    return values
