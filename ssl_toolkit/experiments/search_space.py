"""Search spaces of ``ssl-bench tune``: the spec syntax, each algorithm's default space, ``--space``.

A search spec is declared with a setting (``setting(..., search="log:0.3:100")``) or given on the
command line (``--space consistency_weight=log:1:100``):

==================  ===========================================================================
``log:A:B``         log-uniform in [A, B], A > 0 (whole numbers for an integer setting)
``uniform:A:B``     uniform in [A, B] (settings that take any number)
``int:A:B``         uniform whole number in [A, B] (integer settings)
``choice:a,b,c``    one of the values, read as YAML scalars (``0.01``, ``10``, ``true``, ``null``, ``kl``)
``a,b,c``           the same as ``choice:a,b,c``; a single value fixes the setting for every trial
==================  ===========================================================================

An algorithm's default space is every setting it can take that declares ``search=``: its own
hyperparameters and the shared run settings (the learning rate). ``--space`` replaces the default
of a key, or adds a key that has none, for every algorithm that has the key; a key that none of
the algorithms has is an error. Settings fixed on the command line (``--lr 0.003``, ``--set
ema_decay=0.99``, or a ``--config`` file) are not searched, and giving one of them a ``--space``
too is an error. Every value a spec can produce is checked against the setting's declared range
before anything runs, so a trial never fails on a value the search itself proposed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ssl_toolkit.config import CONFIG_KEYS, RunConfig, parse_scalar
from ssl_toolkit.config.values import coerce
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.naming import closest
from ssl_toolkit.settings import Role, SettingInfo, check_value, settings_of

SPEC_HELP = "log:A:B, uniform:A:B, int:A:B, choice:a,b,... or a,b,..."
RANGE_KINDS = ("log", "uniform", "int")


@dataclass(frozen=True)
class SearchSpec:
    """A parsed spec: a range (``kind`` log, uniform or int, ``low``..``high``) or ``choice`` of ``values``."""

    kind: str
    text: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Dimension:
    """One searched setting of one algorithm: its key, whether it is a hyperparameter, and its spec.

    ``spec`` holds values already checked against (and converted to) the setting's type and range.
    """

    key: str
    is_hparam: bool
    spec: SearchSpec
    source: str

    @property
    def points(self) -> int | None:
        """How many values the dimension can take: a choice's count, an int range's width, else None."""
        if self.spec.kind == "choice":
            return len(self.spec.values)
        if self.spec.kind == "int" or (self.spec.kind == "log" and isinstance(self.spec.low, int)):
            return int(self.spec.high) - int(self.spec.low) + 1
        return None

    def distribution(self) -> Any:
        """The Optuna distribution that samples this dimension."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        spec = self.spec
        if spec.kind == "choice":
            return CategoricalDistribution(list(spec.values))
        if isinstance(spec.low, int):
            return IntDistribution(int(spec.low), int(spec.high), log=spec.kind == "log")
        return FloatDistribution(float(spec.low), float(spec.high), log=spec.kind == "log")


@dataclass(frozen=True)
class SearchSpace:
    """The dimensions searched for one algorithm, in a stable (sorted) order."""

    algo: str
    dimensions: tuple[Dimension, ...]

    @property
    def keys(self) -> list[str]:
        return [dim.key for dim in self.dimensions]

    def describe(self) -> dict[str, str]:
        """``{key: spec}`` as the user would write it: what tune.json and the report show."""
        return {dim.key: dim.spec.text for dim in self.dimensions}

    def distributions(self) -> dict[str, Any]:
        return {dim.key: dim.distribution() for dim in self.dimensions}

    def grid(self) -> dict[str, list[Any]]:
        """Every dimension's values, for Optuna's grid sampler; an error unless every dimension is a choice."""
        ranged = [dim for dim in self.dimensions if dim.spec.kind != "choice"]
        if ranged:
            dim = ranged[0]
            raise UserInputError(f"--sampler grid needs a choice for every searched setting; {self.algo} searches "
                                 f"{dim.key}={dim.spec.text} ({dim.source}): give --space {dim.key}=a,b,...")
        return {dim.key: list(dim.spec.values) for dim in self.dimensions}

    def size(self) -> int | None:
        """The number of distinct configurations, or None when a dimension is continuous."""
        total = 1
        for dim in self.dimensions:
            if dim.points is None:
                return None
            total *= dim.points
        return total

    def corners(self) -> list[dict[str, Any]]:
        """The lowest and the highest value of every dimension (a choice's first and last), as two trials."""
        low = {dim.key: dim.spec.values[0] if dim.spec.kind == "choice" else dim.spec.low for dim in self.dimensions}
        high = {dim.key: dim.spec.values[-1] if dim.spec.kind == "choice" else dim.spec.high
                for dim in self.dimensions}
        return [low, high] if self.dimensions else []

    def split(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A trial's values as (run settings, algorithm hyperparameters)."""
        hparam_keys = {dim.key for dim in self.dimensions if dim.is_hparam}
        run = {key: value for key, value in params.items() if key not in hparam_keys}
        return run, {key: value for key, value in params.items() if key in hparam_keys}


def parse_spec(where: str, text: str) -> SearchSpec:
    """Read a spec's syntax (not yet checked against a setting); an error names ``where`` and the forms."""
    text = text.strip()
    kind, sep, rest = text.partition(":")
    bad = UserInputError(f"{where}: {text!r} is not a search spec; valid: {SPEC_HELP} "
                         f"(e.g. log:1e-3:1e-2 or 0,0.01)")
    if sep and kind in RANGE_KINDS:
        bounds = rest.split(":")
        if len(bounds) != 2:
            raise bad
        low, high = (_number(bound) for bound in bounds)
        if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
            raise bad
        if not low < high:
            raise UserInputError(f"{where}: {text!r} needs A < B")
        if kind == "log" and low <= 0:
            raise UserInputError(f"{where}: {text!r} needs A > 0 for a log-uniform range")
        if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
            raise UserInputError(f"{where}: {text!r} needs whole-number bounds")
        return SearchSpec(kind, text, low, high)
    if sep and kind != "choice":
        raise bad
    items = rest if sep else text
    parts = [part.strip() for part in items.split(",")]
    if not parts or any(not part for part in parts) or len(set(parts)) != len(parts):
        raise UserInputError(f"{where}: {text!r} needs distinct, non-empty values separated by commas")
    return SearchSpec("choice", text, values=tuple(parts))


def _number(text: str) -> int | float | None:
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return None


def check_spec(where: str, spec: SearchSpec, info: SettingInfo) -> SearchSpec:
    """``spec`` for the setting ``info``: the right kind for its type, every value in its declared range.

    Returns the spec with its values converted to the setting's type (``int`` bounds of an integer
    setting, YAML-read choices), so Optuna stores exactly what the run will be given.
    """
    base = info.base_type
    if spec.kind == "choice":
        values = tuple(_choice_value(where, info, text) for text in spec.values)
        return SearchSpec("choice", spec.text, values=values)
    is_int = base is int
    if (is_int and spec.kind == "uniform") or (not is_int and spec.kind == "int") or base not in (int, float):
        fitting = "int:A:B or log:A:B" if is_int else ("log:A:B or uniform:A:B" if base is float else "choice:a,b,...")
        raise UserInputError(f"{where}: {info.name} takes {_type_text(info)}; give {fitting}")
    if is_int and not (float(spec.low).is_integer() and float(spec.high).is_integer()):
        raise UserInputError(f"{where}: {info.name} takes whole numbers; give whole-number bounds")
    low, high = (int(spec.low), int(spec.high)) if is_int else (float(spec.low), float(spec.high))
    for bound in (low, high):
        check_value(where, info, bound)
    return SearchSpec(spec.kind, spec.text, low, high)


def _choice_value(where: str, info: SettingInfo, text: str) -> Any:
    value = parse_scalar(text)
    if isinstance(value, str) and info.base_type in (int, float):
        # YAML reads "1e-3" as text; a number setting means the number.
        number = _number(text)
        value = number if number is not None else value
    if isinstance(value, (dict, list)):
        raise UserInputError(f"{where}: {text!r} is not a single value")
    value = coerce(where, info.name, value, info.hint)
    check_value(where, info, value)
    return value


def _type_text(info: SettingInfo) -> str:
    base = info.base_type
    return {int: "whole numbers", float: "numbers", bool: "true or false"}.get(base, "named values")


def tunable_settings(algo: str) -> dict[str, tuple[bool, SettingInfo]]:
    """What ``tune`` may search for ``algo``: ``{key: (is_hparam, info)}``.

    The run settings that define the experiment (not identity such as the data set, labels, seed or
    backbone, nor execution), then the algorithm's hyperparameters. A key that is both a run
    setting and a hyperparameter is the run setting, as in ``sweep``.
    """
    from ssl_toolkit.registry import get_algorithm

    found: dict[str, tuple[bool, SettingInfo]] = {}
    for info in settings_of(RunConfig):
        if info.role is Role.DEFINING and info.name != "hparams":
            found[info.name] = (False, info)
    for info in settings_of(get_algorithm(algo).Config):
        found.setdefault(info.name, (True, info))
    return found


def parse_space_options(items: Sequence[str]) -> dict[str, SearchSpec]:
    """``--space KEY=SPEC`` options by key, syntax checked; a key given twice is an error."""
    specs: dict[str, SearchSpec] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise UserInputError(f"--space {item!r} is not KEY=SPEC with SPEC one of {SPEC_HELP} "
                                 f"(e.g. --space lr=log:1e-3:1e-2)")
        if key in specs:
            raise UserInputError(f"--space {key} is given twice; keep one")
        specs[key] = parse_spec(f"--space {key}", text)
    return specs


def build_spaces(algos: Sequence[str], overrides: dict[str, SearchSpec],
                 fixed: Iterable[str]) -> dict[str, SearchSpace]:
    """Each algorithm's search space: its declared defaults, minus ``fixed`` keys, with ``overrides``.

    ``fixed`` are the keys given as run flags, ``--set`` or in a ``--config`` file. Raises
    UserInputError for an override naming a key that no algorithm in ``algos`` can take, a fixed
    key, or a value outside a setting's declared range.
    """
    fixed = set(fixed)
    tunables = {algo: tunable_settings(algo) for algo in algos}
    for key in overrides:
        if not any(key in tunable for tunable in tunables.values()):
            valid = sorted({name for tunable in tunables.values() for name in tunable})
            raise UserInputError(f"--space {key}: not a setting that {', '.join(algos)} can search"
                                 f"{closest(key, valid)}; valid: {', '.join(valid)}")
        if key in fixed:
            raise UserInputError(f"--space {key}=... clashes with the value given for {key} as a flag, --set or "
                                 f"--config; keep one of them")
    spaces = {}
    for algo, tunable in tunables.items():
        dimensions = []
        for key, (is_hparam, info) in sorted(tunable.items()):
            if key in overrides:
                spec = check_spec(f"--space {key}={overrides[key].text}: {algo}", overrides[key], info)
                dimensions.append(Dimension(key, is_hparam, spec, "--space"))
            elif info.search and key not in fixed:
                where = f"{algo}: the declared search space of {key}"
                spec = check_spec(where, parse_spec(where, info.search), info)
                dimensions.append(Dimension(key, is_hparam, spec, "default"))
        spaces[algo] = SearchSpace(algo, tuple(dimensions))
    return spaces


def fixed_keys(values: dict[str, Any], config_file_values: dict[str, Any]) -> set[str]:
    """The settings the user fixed: run settings and hyperparameters given by flag, ``--set`` or file."""
    keys = set()
    for source in (values, config_file_values):
        keys |= {key for key in source if key in CONFIG_KEYS and key != "hparams"}
        hparams = source.get("hparams")
        if isinstance(hparams, dict):
            keys |= set(hparams)
    return keys
