"""Reading run folders: each folder under a run root becomes one :class:`RunRecord`.

A run folder holds ``config.json`` (or only ``error.json`` for a run that failed before it wrote
one), and as the run goes ``split.json``, ``metrics.jsonl`` and ``final.json``. This module parses
them, decides whether the run is complete, failed or incomplete, and reduces the config to what a
comparison needs: the identity of the run (algorithm, data set, labels, seed, backbone), the
thread count, and its params (the settings that define what was trained, which are the only ones
that may become a swept setting). The roles of the config fields come from
:class:`ssl_toolkit.config.RunConfig`; nothing here keeps its own list of keys.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_toolkit.config import CONFIG_KEYS, EXECUTION_KEYS, IDENTITY_KEYS, RunConfig
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.evaluation import best_by_validation

SELECTIONS = ("final", "best_val")
# The settings that define what a run trained, besides its identity and its hyperparameters.
DEFINING_KEYS = tuple(key for key in CONFIG_KEYS if key not in IDENTITY_KEYS and key not in EXECUTION_KEYS
                      and key != "hparams")
# A key missing from an older config.json counts as its default, as ssl_toolkit.config.differences has it.
_DEFAULTS = RunConfig().to_json()


@dataclass
class RunRecord:
    """One run folder as read from disk.

    ``status`` is ``"complete"`` (``final.json`` present), ``"failed"`` (``error.json`` present,
    no ``final.json``) or ``"incomplete"`` (neither: interrupted, or still running).
    ``params`` holds the settings that define what was trained, flattened (algorithm
    hyperparameters under their own names); identity and execution settings are not among them.
    ``threads`` is the torch thread count the config asked for (``None``: torch's default).
    """

    path: str
    status: str
    has_config: bool
    algo: str
    dataset: str
    labels: int | None
    seed: int | None
    backbone: str
    threads: int | None
    params: dict[str, Any]
    final: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    error: str | None
    split_digest: str | None

    @property
    def shared_keys(self) -> tuple[str, ...]:
        """The params that every algorithm shares (budget, optimizer, ...), known only from a config.json."""
        return DEFINING_KEYS if self.has_config else ()

    def final_errors(self) -> dict[str, float]:
        """Test error of each model at the end of training, from ``final.json``."""
        if self.final is None:
            return {}
        return numeric_dict(self.final.get("test_error"))

    def best_val_errors(self) -> dict[str, dict[str, Any]]:
        """Per model: the ``step``, ``val_error`` and ``test_error`` of the evaluation with the lowest val error."""
        return best_by_validation(self.metrics)

    def errors(self, selection: str) -> dict[str, float]:
        """Test error per model under ``selection`` (``"final"`` or ``"best_val"``)."""
        if selection == "final":
            return self.final_errors()
        return {model: chosen["test_error"] for model, chosen in self.best_val_errors().items()}


def discover_runs(run_root: Path, relative_to: Path | None = None) -> list[RunRecord]:
    """Every run folder under ``run_root`` (a folder with ``config.json`` or ``error.json``).

    Paths are relative to ``relative_to`` (default ``run_root``), which must contain ``run_root``.
    """
    run_root = Path(run_root)
    if not run_root.is_dir():
        raise UserInputError(f"run folder {str(run_root)!r} does not exist or is not a directory")
    folders = {p.parent for name in ("config.json", "error.json") for p in run_root.rglob(name)}
    return [read_run(folder, Path(relative_to or run_root)) for folder in sorted(folders)]


def read_run(folder: Path, run_root: Path) -> RunRecord:
    """Read one run folder; a folder that cannot be parsed becomes a failed record saying why."""
    rel = folder.relative_to(run_root).as_posix() or "."
    problems: list[str] = []
    config = read_json(folder / "config.json", problems) or {}
    final = read_json(folder / "final.json", problems)
    error_info = read_json(folder / "error.json", problems)
    metrics = read_jsonl(folder / "metrics.jsonl", problems)
    split = read_json(folder / "split.json", problems)
    # A run that failed before writing config.json is known only from the error.json its pool wrote,
    # which holds the config the run was asked for and the grid values of its setting.
    requested = (error_info or {}).get("config")
    identity = config or (requested if isinstance(requested, dict) else {})

    if final is not None and not problems:
        status, error = "complete", None
    elif error_info is not None:
        status = "failed"
        error = str(error_info.get("error") or error_info.get("stderr_tail") or "unknown error")
    elif problems:
        status, error = "failed", "; ".join(problems)
    else:
        status, error = "incomplete", "no final.json: interrupted, or still running"

    return RunRecord(
        path=rel,
        status=status,
        has_config=bool(config),
        algo=str(identity.get("algo", "?")),
        dataset=str(identity.get("dataset", "?")),
        labels=_int_or_none(identity.get("labels")),
        seed=_int_or_none(identity.get("seed")),
        backbone=str(identity.get("backbone") or ""),
        threads=_int_or_none(identity.get("threads")),
        params=defining_params(config) if config else setting_params(error_info),
        final=final if status == "complete" else None,
        metrics=metrics,
        error=_one_line(error) if error else None,
        split_digest=_split_digest(split),
    )


def read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when absent; an unreadable file is added to ``problems``."""
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        problems.append(f"unreadable {path.name}: {exc}")
        return None
    if not isinstance(value, dict):
        problems.append(f"{path.name} is not a JSON object")
        return None
    return value


def read_jsonl(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, in order; unreadable lines are added to ``problems``."""
    if not path.exists():
        return []
    rows = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            # A run killed mid-write may leave a torn last line; anything earlier is a real problem.
            if number != len(lines):
                problems.append(f"unreadable metrics.jsonl line {number}: {exc}")
    return [row for row in rows if isinstance(row, dict)]


def numeric_dict(value: Any) -> dict[str, float]:
    """The numeric entries of a ``{model: error}`` mapping as floats; anything else gives ``{}``."""
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def defining_params(config: dict[str, Any]) -> dict[str, Any]:
    """The defining settings and hyperparameters of a config.json, flattened into one mapping.

    Keys that are not RunConfig fields (left by an older version) are ignored. A hyperparameter
    whose name is also a RunConfig field is kept as ``hparams.NAME``.
    """
    params: dict[str, Any] = {}
    for key in DEFINING_KEYS:
        params.update(_flatten(key, config.get(key, _DEFAULTS[key])))
    top = set(params)
    hparams = config.get("hparams")
    if isinstance(hparams, dict):
        for key, value in hparams.items():
            for name, item in _flatten(key, value).items():
                params[f"hparams.{name}" if name in top else name] = item
    return params


def setting_params(error_info: dict[str, Any] | None) -> dict[str, Any]:
    """The grid values of a run known only from its error.json (already typed, as read from the grid)."""
    setting = (error_info or {}).get("setting")
    if not isinstance(setting, dict):
        return {}
    return {str(k): v for k, v in setting.items() if k not in IDENTITY_KEYS and k not in EXECUTION_KEYS}


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _flatten(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for sub, item in value.items():
            out.update(_flatten(f"{key}.{sub}", item))
        return out
    if isinstance(value, list):
        # Lists must be hashable to be grouped on; their JSON text is stable and readable in a table.
        return {key: json.dumps(value, sort_keys=True)}
    return {key: value}


def _split_digest(split: dict[str, Any] | None) -> str | None:
    if not split or "labeled" not in split:
        return None
    payload = json.dumps({"labeled": split.get("labeled"), "val": split.get("val")}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _one_line(text: str, limit: int = 300) -> str:
    # The last line of a traceback or stderr tail says what went wrong; a table cell has room for one.
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
