"""Declared settings: dataclass fields that carry their role, help text, valid range and search space.

Both the run config (:class:`ssl_toolkit.config.RunConfig`) and every algorithm's hyperparameter
dataclass declare their fields with :func:`setting`. Everything else is derived from that one
declaration: the command-line flags and their help, the range checks (non-finite numbers included),
which settings a resume may change, which ones make two runs different experiments, and the default
search space of ``ssl-bench tune``.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class MyConfig:
    ...     decay: float = setting(0.99, "EMA decay of the teacher", low=0.0, high=1.0, high_open=True)
    >>> check_settings(MyConfig(decay=1.0), "hyperparameter")
    Traceback (most recent call last):
    ...
    ssl_toolkit.errors.UserInputError: hyperparameter decay=1.0 is out of range; valid: [0.0, 1.0)
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from ssl_toolkit.errors import UserInputError


class Role(str, enum.Enum):
    """What a setting means for the experiment.

    ``IDENTITY`` settings name a row of a comparison (algorithm, data set, labels, seed, backbone);
    ``DEFINING`` settings change what is trained; ``EXECUTION`` settings change only where, how fast
    or how visibly it runs (threads, device, precision, evaluation interval, output folder). A resume
    may change execution settings, and runs that differ only in them are the same experiment.
    """

    IDENTITY = "identity"
    DEFINING = "defining"
    EXECUTION = "execution"


_KEY = "ssl_toolkit"


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    role: Role = Role.DEFINING,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: tuple[str, ...] | None = None,
    default_text: str | None = None,
    search: str | None = None,
    flag: str | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its meaning attached.

    ``low``/``high`` bound numbers (``*_open`` excludes the bound), ``choices`` lists valid strings,
    ``default_text`` describes a ``None`` default in help ("the data set's"), ``search`` is the
    default search space of ``ssl-bench tune`` (``log:1:100``, ``uniform:0.9:0.999``, ``choice:a,b``)
    and ``flag`` overrides the command-line flag name.
    """
    info = {
        "role": Role(role), "help": help, "low": low, "high": high, "low_open": low_open, "high_open": high_open,
        "choices": choices, "default_text": default_text, "search": search, "flag": flag,
    }
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata={_KEY: info})
    return field(default=default, metadata={_KEY: info})


@dataclass(frozen=True)
class SettingInfo:
    """One declared field: its name, type hint, default and everything :func:`setting` attached."""

    name: str
    hint: Any
    default: Any
    role: Role
    help: str
    low: float | None
    high: float | None
    low_open: bool
    high_open: bool
    choices: tuple[str, ...] | None
    default_text: str | None
    search: str | None
    flag: str | None

    @property
    def flag_name(self) -> str:
        """The command-line flag: ``--batch-size`` for ``batch_size`` unless declared otherwise."""
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def base_type(self) -> Any:
        """The hint without ``None``: ``int`` for ``int | None``."""
        args = [a for a in typing.get_args(self.hint) if a is not type(None)]
        if typing.get_origin(self.hint) in (typing.Union, types.UnionType) and len(args) == 1:
            return args[0]
        return self.hint

    def valid_text(self) -> str:
        """What values are valid, as error messages say it."""
        if self.choices:
            return ", ".join(self.choices)
        if self.high is None and self.low is not None:
            if self.base_type is int and self.low == 1 and not self.low_open:
                return "a positive integer"
            if self.low == 0 and self.low_open:
                return "a positive number"
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        low = "-inf" if self.low is None else _number(self.low)
        high = "inf" if self.high is None else _number(self.high)
        return f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) >= 2**31 else str(value)


def settings_of(cls: type) -> list[SettingInfo]:
    """The fields of dataclass ``cls`` in declaration order; an undeclared field is a plain defining one."""
    hints = typing.get_type_hints(cls)
    infos = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_KEY, {})
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        )
        infos.append(
            SettingInfo(
                name=f.name, hint=hints[f.name], default=default, role=meta.get("role", Role.DEFINING),
                help=meta.get("help", ""), low=meta.get("low"), high=meta.get("high"),
                low_open=meta.get("low_open", False), high_open=meta.get("high_open", False),
                choices=meta.get("choices"), default_text=meta.get("default_text"), search=meta.get("search"),
                flag=meta.get("flag"),
            )
        )
    return infos


def check_value(where: str, info: SettingInfo, value: Any, *, as_flag: bool = False) -> None:
    """Raise UserInputError unless ``value`` is finite, in range and one of the choices.

    ``as_flag`` names the setting as its flag (``--lr 0``) rather than as a key (``lr=0``).
    """
    if value is None or isinstance(value, bool):
        return
    shown = f"{info.flag_name} {value!r}" if as_flag else f"{info.name}={value!r}"
    prefix = f"{where} " if where else ""
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise UserInputError(f"{prefix}{shown} is not a finite number; valid: {info.valid_text()}")
        too_low = info.low is not None and (value <= info.low if info.low_open else value < info.low)
        too_high = info.high is not None and (value >= info.high if info.high_open else value > info.high)
        if too_low or too_high:
            raise UserInputError(f"{prefix}{shown} is out of range; valid: {info.valid_text()}")
    elif isinstance(value, str) and info.choices and value not in info.choices:
        raise UserInputError(f"{prefix}{shown} is not valid; valid: {info.valid_text()}")


def check_settings(obj: Any, where: str = "", *, as_flag: bool = False) -> None:
    """Check every declared field of dataclass instance ``obj`` with :func:`check_value`."""
    for info in settings_of(type(obj)):
        check_value(where, info, getattr(obj, info.name), as_flag=as_flag)


def names_with_role(cls: type, *roles: Role) -> list[str]:
    """The fields of ``cls`` whose role is one of ``roles``, in declaration order."""
    return [info.name for info in settings_of(cls) if info.role in roles]
