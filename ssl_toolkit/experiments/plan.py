"""Planning a comparison or a sweep: the resolved RunConfig of every run, before anything runs.

Every run of a plan gets the same data set, label count, seed, validation size and run settings
for every algorithm, so the splits (a deterministic function of those) and the budget are
identical across the algorithms compared. Resolving every config up front means a bad flag or
hyperparameter is refused before the first run starts.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_toolkit.config import CONFIG_KEYS, EXECUTION_KEYS, RunConfig, differences, parse_scalar, resolve_run_config
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.naming import closest
from ssl_toolkit.settings import settings_of

PLAN_FOLDER = "plans"


@dataclass
class PlannedRun:
    """One run of a plan: its name (its folder under the plan's root), resolved config and grid values."""

    name: str
    config: RunConfig
    setting: dict[str, Any] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return Path(self.config.out)

    @property
    def finished(self) -> bool:
        return (self.run_dir / "final.json").exists()

    def plan_file(self, root: Path) -> Path:
        """Where the planned config is written, for ``ssl-bench run --config``."""
        return root / PLAN_FOLDER / f"{self.name}.json"


def resolve_planned(name: str, values: dict[str, Any], config_file: str | None) -> RunConfig:
    """Resolve one planned run as ``ssl-bench run`` would; an error names the run."""
    try:
        return resolve_run_config(values, config_file)
    except UserInputError as error:
        raise UserInputError(f"{name}: {error}") from None


def plan_compare(algos: Sequence[str], dataset: str, labels: Sequence[int], seeds: Sequence[int], out: Path,
                 values: dict[str, Any], config_file: str | None = None) -> list[PlannedRun]:
    """Every (label count, seed, algorithm), seeds before algorithms so early results are comparable."""
    runs = []
    for n_labels, seed, algo in itertools.product(labels, seeds, algos):
        name = f"{dataset}-{n_labels}/{algo}/seed{seed}"
        run_values = {**values, "algo": algo, "dataset": dataset, "labels": n_labels, "seed": seed,
                      "out": str(out / name)}
        runs.append(PlannedRun(name, resolve_planned(name, run_values, config_file)))
    return runs


def grid_keys(algo: str) -> list[str]:
    """What ``--grid`` may sweep: any setting that defines the experiment, or a hyperparameter of ``algo``."""
    from ssl_toolkit.registry import get_algorithm

    shared = [info.name for info in settings_of(RunConfig)
              if info.name not in EXECUTION_KEYS and info.name not in ("algo", "dataset", "seed", "hparams")]
    return shared + [info.name for info in settings_of(get_algorithm(algo).Config)]


def parse_grid(items: Sequence[str], algo: str) -> list[tuple[str, list[Any]]]:
    """``--grid KEY=v1,v2`` options, in order; values are read as YAML scalars (``0.99``, ``null``)."""
    valid = grid_keys(algo)
    grid: list[tuple[str, list[Any]]] = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise UserInputError(f"--grid {item!r} is not KEY=v1,v2,... (e.g. --grid ema_decay=0.99,0.999)")
        if key not in valid:
            raise UserInputError(f"--grid {key}: not a grid key for {algo}{closest(key, valid)}; "
                                 f"valid: {', '.join(valid)}")
        if any(key == seen for seen, _ in grid):
            raise UserInputError(f"--grid {key} is given twice; put all its values in one --grid")
        parts = [part.strip() for part in text.split(",")]
        if any(not part for part in parts) or len(set(parts)) != len(parts):
            raise UserInputError(f"--grid {item!r}: give distinct, non-empty values separated by commas")
        grid.append((key, [parse_scalar(part) for part in parts]))
    return grid


def _folder_value(value: Any) -> str:
    # Grid values become folder names; anything that is not safe in a path becomes "_".
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", json.dumps(value) if not isinstance(value, str) else value)


def plan_sweep(algo: str, dataset: str, labels: Sequence[int], grid: Sequence[tuple[str, list[Any]]],
               seeds: Sequence[int], out: Path, values: dict[str, Any],
               config_file: str | None = None) -> list[PlannedRun]:
    """Every label count x grid point x seed; the grid point names the folder (``key=value,...``)."""
    label_list = dict(grid).get("labels") or list(labels)
    axes = [(key, options) for key, options in grid if key != "labels"]
    shared = set(CONFIG_KEYS)
    runs = []
    for n_labels in label_list:
        for point in itertools.product(*(options for _, options in axes)):
            setting = {key: value for (key, _), value in zip(axes, point, strict=True)}
            folder = ",".join(f"{key}={_folder_value(value)}" for key, value in setting.items())
            hparams = {**(values.get("hparams") or {}), **{k: v for k, v in setting.items() if k not in shared}}
            for seed in seeds:
                name = "/".join(filter(None, [f"{dataset}-{n_labels}", algo, folder, f"seed{seed}"]))
                run_values = {**values, **{k: v for k, v in setting.items() if k in shared}, "hparams": hparams,
                              "algo": algo, "dataset": dataset, "labels": n_labels, "seed": seed,
                              "out": str(out / name)}
                runs.append(PlannedRun(name, resolve_planned(name, run_values, config_file), setting))
    return runs


def check_reusable(runs: Sequence[PlannedRun]) -> None:
    """A finished run is reused only if it was trained with the config requested now."""
    for run in runs:
        if not run.finished:
            continue
        try:
            saved = json.loads((run.run_dir / "config.json").read_text())
        except (OSError, ValueError) as error:
            raise UserInputError(f"{run.name}: finished, but config.json is unreadable ({error})") from None
        found = differences(saved, run.config)
        if found:
            raise UserInputError(
                f"{run.name} finished with a different config ({', '.join(map(str, found))}); use another "
                f"--out, or delete that run folder to rerun it"
            )
