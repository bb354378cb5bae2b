"""Comparison tables and plots built from run folders alone.

``ssl-bench report DIR`` (and ``compare``/``sweep`` once their runs finish) reads every run folder
under ``DIR`` — a folder holding ``config.json``, or ``error.json`` for a run that failed before it
wrote one — and reports, per data set, backbone, label count, algorithm and swept setting, the test
error over seeds in two selections:

* **final model**: ``final.json``'s test error, the model at the end of training;
* **best validation**: for each run and each evaluated model, the ``metrics.jsonl`` row with the
  lowest *validation* error, and that row's test error. The test error never selects anything.

Outputs: a rich table on the terminal, ``report.md`` (deterministic: sorted rows, fixed float
formatting, no timestamps or absolute paths), ``results.csv`` and PNG plots linked from the report.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_toolkit.errors import UserInputError
from ssl_toolkit.results import atomic_write_bytes

SELECTIONS = ("final", "best_val")
SELECTION_TITLES = {"final": "Final model", "best_val": "Best validation"}
SELECTION_NOTES = {
    "final": "Test error of the model at the end of training (`final.json`).",
    "best_val": (
        "Test error of each run's model at the evaluation with the lowest validation error "
        "(`metrics.jsonl`), chosen separately for the student and the teacher. "
        "Selection uses validation error only, never test error."
    ),
}
BASELINE = "supervised"
# Rows list the paper's algorithms in the paper's order; any other algorithm follows alphabetically.
_ALGO_ORDER = ("supervised", "pi_model", "temporal_ensembling", "mean_teacher")
# Config keys that identify a row on their own, and keys that say where or how a run was executed
# rather than what was trained; neither kind may turn into a "swept setting".
_IDENTITY_KEYS = frozenset({"algo", "dataset", "labels", "seed", "backbone"})
_EXECUTION_KEYS = frozenset(
    {
        "out",
        "out_dir",
        "run_dir",
        "threads",
        "num_threads",
        "device",
        "resume",
        "overwrite",
        "data_dir",
        "data_root",
        "root",
        "plugin",
        "plugins",
        "config",
        "config_file",
        "preset",
        "log_every",
        "checkpoint_every",
        "version",
        "versions",
        "created",
        "created_at",
        "hostname",
        "host",
        "command",
        "argv",
        "split",
        "split_name",
        "wall_time_s",
        "progress",
        "quiet",
        "verbose",
        "num_workers",
    }
)


@dataclass
class RunRecord:
    """One run folder as read from disk.

    ``status`` is ``"complete"`` (``final.json`` present), ``"failed"`` (``error.json`` present,
    no ``final.json``) or ``"incomplete"`` (neither: interrupted, or still running).
    ``params`` holds the config values that define what was trained, flattened (algorithm
    hyperparameters under their own names), without the identity keys.
    """

    path: str
    status: str
    has_config: bool
    algo: str
    dataset: str
    labels: int | None
    seed: int | None
    backbone: str
    params: dict[str, Any]
    top_level_keys: frozenset[str]
    final: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    error: str | None
    split_digest: str | None

    def final_errors(self) -> dict[str, float]:
        """Test error of each model at the end of training, from ``final.json``."""
        if self.final is None:
            return {}
        return _numeric_dict(self.final.get("test_error"))

    def best_val_errors(self) -> dict[str, tuple[int, float, float]]:
        """Per model: (step, val error, test error) of the metrics row with the lowest val error.

        Ties go to the earliest step. The test error is read from the selected row, never compared.
        """
        best: dict[str, tuple[int, float, float]] = {}
        for row in self.metrics:
            val = _numeric_dict(row.get("val_error"))
            test = _numeric_dict(row.get("test_error"))
            step = row.get("step")
            for model, val_error in val.items():
                if model not in test or math.isnan(val_error):
                    continue
                current = best.get(model)
                if current is None or val_error < current[1]:
                    best[model] = (int(step) if isinstance(step, int) else -1, val_error, test[model])
        return best

    def errors(self, selection: str) -> dict[str, float]:
        """Test error per model under ``selection`` (``"final"`` or ``"best_val"``)."""
        if selection == "final":
            return self.final_errors()
        return {model: chosen[2] for model, chosen in self.best_val_errors().items()}


@dataclass
class Stat:
    """Test errors of one model over seeds: the values, their mean and sample standard deviation."""

    seeds: list[int]
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        # Sample standard deviation (n - 1), as papers report over runs; undefined for one run.
        return statistics.stdev(self.values) if len(self.values) > 1 else None


@dataclass
class Row:
    """One table row: a data set, backbone, label count, algorithm and setting, in one selection."""

    selection: str
    dataset: str
    backbone: str
    labels: int | None
    algo: str
    setting: tuple[tuple[str, Any], ...]
    errors: dict[str, Stat]
    runs: list[RunRecord]
    gain: dict[str, float | None] = field(default_factory=dict)

    @property
    def n_complete(self) -> int:
        return sum(run.status == "complete" for run in self.runs)

    @property
    def n_failed(self) -> int:
        return sum(run.status != "complete" for run in self.runs)

    @property
    def wall_time_s(self) -> float | None:
        times = [
            float(run.final["wall_time_s"])
            for run in self.runs
            if run.final is not None and isinstance(run.final.get("wall_time_s"), (int, float))
        ]
        return statistics.fmean(times) if times else None

    @property
    def setting_text(self) -> str:
        return ", ".join(f"{key}={format_value(value)}" for key, value in self.setting)


@dataclass
class Report:
    """The comparison built from a run root: rows of both selections, failures, plots, and the files."""

    run_root: Path
    out_dir: Path
    runs: list[RunRecord]
    rows: list[Row]
    warnings: list[str]
    plots: list[Path]
    markdown: str

    @property
    def failed(self) -> list[RunRecord]:
        return [run for run in self.runs if run.status != "complete"]

    @property
    def models(self) -> list[str]:
        return _ordered_models(model for row in self.rows for model in row.errors)

    def rows_for(self, selection: str) -> list[Row]:
        """The rows of one selection, in table order."""
        return [row for row in self.rows if row.selection == selection]

    def print(self, console: Any = None) -> None:
        """Print both selections, the fairness warnings and the failed runs as rich tables."""
        from rich.console import Console
        from rich.table import Table

        if console is None:
            console = Console()
            if not console.is_terminal:
                # Piped or captured output has no width of its own; rich's 80 columns would wrap the rows.
                console = Console(width=max(console.width, 160))
        models = self.models
        show_backbone = len({row.backbone for row in self.rows}) > 1
        show_setting = any(row.setting for row in self.rows)
        for selection in SELECTIONS:
            table = Table(title=f"{SELECTION_TITLES[selection]}: test error (%), mean ± std over seeds")
            for header in _headers(models, show_backbone, show_setting):
                table.add_column(header, justify="left" if header in _LEFT_COLUMNS else "right", no_wrap=True)
            for row in self.rows_for(selection):
                table.add_row(*_cells(row, models, show_backbone, show_setting))
            console.print(table)
        for warning in self.warnings:
            console.print(f"[yellow]warning:[/yellow] {warning}", markup=True, highlight=False)
        if self.failed:
            table = Table(title="Failed or incomplete runs")
            for header in ("Run", "Status", "Error"):
                table.add_column(header)
            for run in self.failed:
                table.add_row(run.path, run.status, run.error or "")
            console.print(table)
        console.print(f"report: {self.out_dir / 'report.md'}", highlight=False)


# --------------------------------------------------------------------------------------------
# Reading run folders


def discover_runs(run_root: Path) -> list[RunRecord]:
    """Every run folder under ``run_root`` (a folder with ``config.json`` or ``error.json``)."""
    run_root = Path(run_root)
    if not run_root.is_dir():
        raise UserInputError(f"run folder {str(run_root)!r} does not exist or is not a directory")
    folders = {p.parent for name in ("config.json", "error.json") for p in run_root.rglob(name)}
    return [read_run(folder, run_root) for folder in sorted(folders)]


def read_run(folder: Path, run_root: Path) -> RunRecord:
    """Read one run folder; a folder that cannot be parsed becomes a failed record saying why."""
    rel = folder.relative_to(run_root).as_posix() or "."
    problems: list[str] = []
    config = _read_json(folder / "config.json", problems) or {}
    final = _read_json(folder / "final.json", problems)
    error_info = _read_json(folder / "error.json", problems)
    metrics = _read_jsonl(folder / "metrics.jsonl", problems)
    split = _read_json(folder / "split.json", problems)
    # A run that failed before writing config.json is known only from error.json (written by compare),
    # which holds the config the run was asked for and the grid values of its setting.
    requested = (error_info or {}).get("config")
    identity = config or (requested if isinstance(requested, dict) else None) or error_info or {}

    if final is not None and not problems:
        status, error = "complete", None
    elif error_info is not None:
        status = "failed"
        error = str(error_info.get("error") or error_info.get("stderr_tail") or "unknown error")
    elif problems:
        status, error = "failed", "; ".join(problems)
    else:
        status, error = "incomplete", "no final.json: interrupted, or still running"

    params, top_level = _defining_params(config) if config else (_setting_params(error_info), frozenset())
    labels = identity.get("labels")
    seed = identity.get("seed")
    return RunRecord(
        path=rel,
        status=status,
        has_config=bool(config),
        algo=str(identity.get("algo", "?")),
        dataset=str(identity.get("dataset", "?")),
        labels=int(labels) if isinstance(labels, (int, float)) else None,
        seed=int(seed) if isinstance(seed, (int, float)) else None,
        backbone=str(identity.get("backbone") or ""),
        params=params,
        top_level_keys=top_level,
        final=final if status == "complete" else None,
        metrics=metrics,
        error=_one_line(error) if error else None,
        split_digest=_split_digest(split),
    )


def _read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
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


def _read_jsonl(path: Path, problems: list[str]) -> list[dict[str, Any]]:
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


def _numeric_dict(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _defining_params(config: dict[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    top: dict[str, Any] = {}
    for key, value in config.items():
        if key in _IDENTITY_KEYS or key in _EXECUTION_KEYS or key == "hparams":
            continue
        top.update(_flatten(key, value))
    params = dict(top)
    hparams = config.get("hparams")
    if isinstance(hparams, dict):
        for key, value in hparams.items():
            for name, item in _flatten(key, value).items():
                params[f"hparams.{name}" if name in top else name] = item
    return params, frozenset(top)


def _setting_params(error_info: dict[str, Any] | None) -> dict[str, Any]:
    setting = (error_info or {}).get("setting")
    if not isinstance(setting, dict):
        return {}
    return {str(k): _coerce(v) for k, v in setting.items() if k not in _IDENTITY_KEYS}


def _coerce(value: Any) -> Any:
    """Grid values arrive as strings in error.json; compare them with config values as numbers."""
    if isinstance(value, str):
        for parse in (int, float):
            try:
                return parse(value)
            except ValueError:
                pass
    return value


def _flatten(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for sub, item in value.items():
            out.update(_flatten(f"{key}.{sub}", item))
        return out
    if isinstance(value, list):
        return {key: json.dumps(value, sort_keys=True)}
    return {key: value}


def _split_digest(split: dict[str, Any] | None) -> str | None:
    if not split or "labeled" not in split:
        return None
    payload = json.dumps({"labeled": split.get("labeled"), "val": split.get("val")}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _one_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Aggregation


def _block_key(run: RunRecord) -> tuple[str, str, int | None, str]:
    return (run.dataset, run.backbone, run.labels, run.algo)


def swept_keys(runs: Sequence[RunRecord]) -> dict[tuple[str, str, int | None, str], list[str]]:
    """Per (dataset, backbone, labels, algo): the config keys whose values differ between its runs.

    Differences are looked for within one label count, so values that a run derives from the label
    count (the papers' ``w_max = scale * M / N``) do not pass for a sweep.
    """
    blocks: dict[tuple[str, str, int | None, str], list[RunRecord]] = defaultdict(list)
    for run in runs:
        blocks[_block_key(run)].append(run)
    keys = {}
    for block, members in blocks.items():
        # Runs that never wrote config.json know only their grid values; they join a row, not define one.
        members = [run for run in members if run.has_config] or members
        names = sorted({name for run in members for name in run.params})
        keys[block] = [name for name in names if len({_hashable(run.params.get(name)) for run in members}) > 1]
    return keys


def aggregate(runs: Sequence[RunRecord]) -> list[Row]:
    """Rows of both selections, in table order, with the gain over the supervised baseline."""
    variant = swept_keys(runs)
    groups: dict[tuple[Any, ...], list[RunRecord]] = defaultdict(list)
    for run in runs:
        block = _block_key(run)
        setting = tuple((name, run.params.get(name)) for name in variant[block])
        groups[(*block, setting)].append(run)

    rows: list[Row] = []
    for selection in SELECTIONS:
        for (dataset, backbone, labels, algo, setting), members in groups.items():
            members = sorted(members, key=lambda r: (r.seed if r.seed is not None else -1, r.path))
            per_model: dict[str, Stat] = {}
            for run in members:
                if run.status != "complete":
                    continue
                for model, value in run.errors(selection).items():
                    stat = per_model.setdefault(model, Stat([], []))
                    stat.seeds.append(run.seed if run.seed is not None else -1)
                    stat.values.append(value)
            errors = {model: per_model[model] for model in _ordered_models(per_model)}
            rows.append(Row(selection, dataset, backbone, labels, algo, setting, errors, members))
    rows.sort(key=_row_sort_key)
    _fill_gains(rows)
    return rows


def _fill_gains(rows: list[Row]) -> None:
    for row in rows:
        if row.algo == BASELINE:
            continue
        candidates = [
            base
            for base in rows
            if base.algo == BASELINE
            and (base.selection, base.dataset, base.labels, base.backbone)
            == (row.selection, row.dataset, row.labels, row.backbone)
        ]
        if len(candidates) > 1:
            # A sweep over shared settings (steps, lr) that includes the baseline: match them.
            mine = dict(row.setting)
            candidates = [base for base in candidates if all(mine.get(k, v) == v for k, v in base.setting)]
        base_stat = candidates[0].errors.get("student") if len(candidates) == 1 else None
        for model, stat in row.errors.items():
            if base_stat is None or base_stat.mean is None or stat.mean is None:
                row.gain[model] = None
            else:
                row.gain[model] = base_stat.mean - stat.mean


def fairness_warnings(runs: Sequence[RunRecord]) -> list[str]:
    """Differences that make a comparison unfair: splits, or shared settings, that differ.

    Runs with the same data set, label count and seed must share their split; algorithms compared
    at one data set, backbone and label count must share budget and optimizer settings.
    """
    warnings = []
    splits: dict[tuple[Any, ...], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.split_digest is not None:
            key = (run.dataset, run.labels, run.seed, _hashable(run.params.get("val_size")))
            splits[key][run.split_digest].append(run.path)
    for (dataset, labels, seed, _), digests in sorted(splits.items(), key=lambda kv: _sortable(kv[0])):
        if len(digests) > 1:
            paths = "; ".join(" ".join(sorted(paths)) for paths in sorted(digests.values()))
            warnings.append(f"{dataset}, {labels} labels, seed {seed}: runs use different splits ({paths})")

    shared: dict[tuple[Any, ...], list[RunRecord]] = defaultdict(list)
    for run in runs:
        if run.status == "complete":
            shared[(run.dataset, run.backbone, run.labels)].append(run)
    for (dataset, backbone, labels), members in sorted(shared.items(), key=lambda kv: _sortable(kv[0])):
        keys = sorted({key for run in members for key in run.top_level_keys})
        for key in keys:
            by_algo: dict[str, set[Any]] = defaultdict(set)
            for run in members:
                by_algo[run.algo].add(_hashable(run.params.get(key)))
            if len({frozenset(values) for values in by_algo.values()}) > 1:
                detail = ", ".join(
                    f"{algo} {'/'.join(format_value(v) for v in sorted(values, key=_sort_value))}"
                    for algo, values in sorted(by_algo.items(), key=lambda kv: _algo_rank(kv[0]))
                )
                where = f"{dataset}{f' ({backbone})' if backbone else ''}, {labels} labels"
                warnings.append(f"{where}: {key} differs between algorithms ({detail})")
    return warnings


# --------------------------------------------------------------------------------------------
# Formatting


_LEFT_COLUMNS = ("Dataset", "Backbone", "Algorithm", "Setting")


def format_value(value: Any) -> str:
    """A config value as shown in tables, folder-independent and stable across builds."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _fmt_stat(stat: Stat | None) -> str:
    if stat is None or stat.mean is None:
        return "—"
    if stat.std is None:
        return f"{stat.mean:.2f}"
    return f"{stat.mean:.2f} ± {stat.std:.2f}"


def _headers(models: list[str], show_backbone: bool, show_setting: bool) -> list[str]:
    headers = ["Dataset"]
    if show_backbone:
        headers.append("Backbone")
    headers += ["Labels", "Algorithm"]
    if show_setting:
        headers.append("Setting")
    headers.append("n")
    headers += [f"{model.capitalize()} error" for model in models]
    headers += [f"Gain ({model})" for model in models]
    headers.append("Wall time (s)")
    return headers


def _cells(row: Row, models: list[str], show_backbone: bool, show_setting: bool) -> list[str]:
    cells = [row.dataset]
    if show_backbone:
        cells.append(row.backbone)
    cells += [str(row.labels), row.algo]
    if show_setting:
        cells.append(row.setting_text)
    n = max((stat.n for stat in row.errors.values()), default=0)
    cells.append(f"{n} ({row.n_failed} failed)" if row.n_failed else str(n))
    cells += [_fmt_stat(row.errors.get(model)) for model in models]
    for model in models:
        if row.algo == BASELINE:
            cells.append("baseline" if model in row.errors else "—")
        else:
            cells.append(_fmt(row.gain.get(model), signed=True))
    cells.append("—" if row.wall_time_s is None else f"{row.wall_time_s:.1f}")
    return cells


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(report_rows: list[Row], runs: list[RunRecord], warnings: list[str], plots: list[str]) -> str:
    """The report as Markdown; depends only on its inputs, so two builds are byte-identical."""
    models = _ordered_models(model for row in report_rows for model in row.errors)
    show_backbone = len({row.backbone for row in report_rows}) > 1
    show_setting = any(row.setting for row in report_rows)
    complete = sum(run.status == "complete" for run in runs)
    failed = len(runs) - complete
    lines = [
        "# ssl-bench report",
        "",
        f"{complete} complete run(s), {failed} failed or incomplete.",
        "",
        "Test error in percent: mean ± sample standard deviation over seeds; *n* is the number of "
        "seeds that finished. *Gain* is the supervised baseline's mean student test error minus the "
        "row's mean (same data set, label count and backbone), in percentage points: positive means "
        "fewer errors than supervised. Wall time is the mean per run, in seconds.",
        "",
    ]
    for selection in SELECTIONS:
        headers = _headers(models, show_backbone, show_setting)
        lines += [f"## {SELECTION_TITLES[selection]}", "", SELECTION_NOTES[selection], ""]
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "|".join("---" if h in _LEFT_COLUMNS else "---:" for h in headers) + "|")
        for row in report_rows:
            if row.selection == selection:
                cells = _cells(row, models, show_backbone, show_setting)
                lines.append("| " + " | ".join(_md_escape(cell) for cell in cells) + " |")
        lines.append("")
    lines += ["## Fairness checks", ""]
    if warnings:
        lines += [f"- {_md_escape(warning)}" for warning in warnings]
    else:
        lines.append(
            "- Runs with the same data set, label count and seed share one split; algorithms compared "
            "at one data set, backbone and label count share their non-algorithm settings."
        )
    lines.append("")
    if plots:
        lines += ["## Plots", ""]
        for name in plots:
            lines += [f"![{name}]({name})", ""]
    failed_runs = [run for run in runs if run.status != "complete"]
    if failed_runs:
        lines += ["## Failed or incomplete runs", "", "| Run | Status | Error |", "|---|---|---|"]
        for run in failed_runs:
            lines.append(f"| {_md_escape(run.path)} | {run.status} | {_md_escape(run.error or '')} |")
        lines.append("")
    return "\n".join(lines)


def render_csv(report_rows: list[Row]) -> str:
    """One line per row and model (long format), fixed formatting, failures counted per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "selection",
            "dataset",
            "backbone",
            "labels",
            "algorithm",
            "setting",
            "model",
            "n",
            "seeds",
            "error_mean",
            "error_std",
            "gain_over_supervised",
            "wall_time_mean_s",
            "n_failed",
        ]
    )
    for row in report_rows:
        models = list(row.errors) or [""]
        for model in models:
            stat = row.errors.get(model)
            gain = row.gain.get(model)
            writer.writerow(
                [
                    row.selection,
                    row.dataset,
                    row.backbone,
                    "" if row.labels is None else row.labels,
                    row.algo,
                    row.setting_text,
                    model,
                    stat.n if stat else 0,
                    ";".join(str(s) for s in stat.seeds) if stat else "",
                    _csv_float(stat.mean if stat else None),
                    _csv_float(stat.std if stat else None),
                    _csv_float(gain),
                    _csv_float(row.wall_time_s),
                    row.n_failed,
                ]
            )
    return buffer.getvalue()


def _csv_float(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


# --------------------------------------------------------------------------------------------
# Plots


def _new_figure(ncols: int) -> Any:
    # The object-oriented Figure API renders through Agg without touching pyplot's global state.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0 * ncols, 4.2), layout="constrained")
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, list(axes)


def _legend(figure: Any, ax: Any) -> None:
    # Below the plots rather than on them: a sweep has many lines and the legend would hide them.
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    # About 170 characters of small text fit across the figure; fewer columns for longer labels.
    longest = max(len(label) for label in labels) + 6
    ncols = max(1, min(3, len(handles), 170 // longest))
    rows = -(-len(handles) // ncols)
    width, height = figure.get_size_inches()
    figure.set_size_inches(width, height + 0.22 * rows)
    figure.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize="small", frameon=False)


def _save_figure(figure: Any, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _line_label(algo: str, setting_text: str, model: str, show_model: bool) -> str:
    label = algo + (f" [{setting_text}]" if setting_text else "")
    return f"{label} ({model})" if show_model else label


def _where(dataset: str, backbone: str, labels: int | None) -> str:
    return f"{dataset}{f' ({backbone})' if backbone else ''}, {labels} labels"


def _errorbar(ax: Any, points: list[tuple[float, Stat]], model: str, color: Any, label: str) -> None:
    # Mean ± std over seeds at each x; the student solid with circles, any other model dashed with squares.
    points = sorted(points, key=lambda p: p[0])
    if not points:
        return
    ax.errorbar(
        [p[0] for p in points],
        [p[1].mean for p in points],
        yerr=[p[1].std or 0.0 for p in points],
        fmt="-o" if model == "student" else "--s",
        color=color,
        capsize=3,
        label=label,
    )


def _finish_figure(figure: Any, axes: list[Any], path: Path) -> Path:
    # Every plot is finished the same way: a light grid, the legend below, then written atomically.
    for ax in axes:
        ax.grid(alpha=0.3)
    _legend(figure, axes[0])
    _save_figure(figure, path)
    return path


def plot_curves(rows: list[Row], out_dir: Path) -> list[Path]:
    """Validation and test error against steps, mean over seeds with a ±std band (paper Figure 3)."""
    written = []
    figures: dict[tuple[str, str, int | None], list[Row]] = defaultdict(list)
    for row in rows:
        if row.selection == "final":
            figures[(row.dataset, row.backbone, row.labels)].append(row)
    for (dataset, backbone, labels), members in sorted(figures.items(), key=lambda kv: _sortable(kv[0])):
        lines = []
        for row in members:
            complete = [run for run in row.runs if run.status == "complete" and run.metrics]
            models = _ordered_models(
                model for run in complete for metric in run.metrics for model in _numeric_dict(metric.get("test_error"))
            )
            for model in models:
                lines.append((row, model, complete))
        if not lines:
            continue
        figure, axes = _new_figure(2)
        colors = _colors(len(members))
        show_model = any(model != "student" for _, model, _ in lines)
        one_algo = len({row.algo for row in members}) == 1
        for row, model, complete in lines:
            color = colors[members.index(row)]
            style = "-" if model == "student" else "--"
            for ax, split in zip(axes, ("val_error", "test_error"), strict=True):
                by_step: dict[int, list[float]] = defaultdict(list)
                for run in complete:
                    for metric in run.metrics:
                        value = _numeric_dict(metric.get(split)).get(model)
                        if value is not None and isinstance(metric.get("step"), int):
                            by_step[metric["step"]].append(value)
                steps = sorted(by_step)
                if not steps:
                    continue
                means = [statistics.fmean(by_step[s]) for s in steps]
                stds = [statistics.stdev(by_step[s]) if len(by_step[s]) > 1 else 0.0 for s in steps]
                if one_algo and row.setting_text:
                    label = row.setting_text + (f" ({model})" if show_model else "")
                else:
                    label = _line_label(row.algo, row.setting_text, model, show_model)
                ax.plot(steps, means, style, color=color, label=label)
                low = [m - s for m, s in zip(means, stds, strict=True)]
                high = [m + s for m, s in zip(means, stds, strict=True)]
                ax.fill_between(steps, low, high, color=color, alpha=0.18, linewidth=0)
        for ax, name in zip(axes, ("validation", "test"), strict=True):
            ax.set_xlabel("step")
            ax.set_ylabel(f"{name} error (%)")
            ax.set_title(f"{_where(dataset, backbone, labels)}: {name} error")
        written.append(_finish_figure(figure, axes, out_dir / f"curves_{_slug(dataset, backbone, str(labels))}.png"))
    return written


def plot_labels(rows: list[Row], out_dir: Path) -> list[Path]:
    """Test error against the number of labels, mean ± std over seeds, for both selections."""
    written = []
    by_dataset: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_dataset[row.dataset].append(row)
    for dataset, members in sorted(by_dataset.items()):
        label_counts = sorted({row.labels for row in members if row.labels is not None and row.errors})
        if len(label_counts) < 2:
            continue
        series: dict[tuple[str, str, str, str], dict[str, list[tuple[int, Stat]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for row in members:
            for model, stat in row.errors.items():
                if stat.mean is not None and row.labels is not None:
                    key = (row.algo, row.backbone, row.setting_text, model)
                    series[key][row.selection].append((row.labels, stat))
        if not series:
            continue
        figure, axes = _new_figure(2)
        keys = sorted(series, key=lambda k: (_algo_rank(k[0]), k[1], k[2], _model_rank(k[3])))
        # One color per trained configuration; the teacher is drawn dashed in its student's color.
        configs = list(dict.fromkeys(k[:3] for k in keys))
        colors = _colors(len(configs))
        show_model = any(k[3] != "student" for k in keys)
        show_backbone = len({k[1] for k in keys}) > 1
        for key in keys:
            algo, backbone, setting_text, model = key
            color = colors[configs.index(key[:3])]
            variant = ", ".join(filter(None, [backbone if show_backbone else "", setting_text]))
            label = _line_label(algo, variant, model, show_model)
            for ax, selection in zip(axes, SELECTIONS, strict=True):
                _errorbar(ax, series[key][selection], model, color, label)
        for ax, selection in zip(axes, SELECTIONS, strict=True):
            if label_counts[-1] / label_counts[0] > 10:
                ax.set_xscale("log")
            ax.set_xticks(label_counts, [str(c) for c in label_counts])
            ax.set_xlabel("labeled examples")
            ax.set_ylabel("test error (%)")
            ax.set_title(f"{dataset}: {SELECTION_TITLES[selection].lower()}")
        written.append(_finish_figure(figure, axes, out_dir / f"labels_{_slug(dataset)}.png"))
    return written


def baseline_means(rows: list[Row]) -> dict[tuple[str, str, int | None, str], float]:
    """The supervised baseline's mean student error per (data set, backbone, labels, selection)."""
    means = {}
    for row in rows:
        stat = row.errors.get("student")
        if row.algo == BASELINE and not row.setting and stat is not None and stat.mean is not None:
            means[(row.dataset, row.backbone, row.labels, row.selection)] = stat.mean
    return means


def plot_sweeps(rows: list[Row], out_dir: Path) -> list[Path]:
    """Test error against each swept setting, one line per value of the others (paper Figure 4).

    Where the folder also holds supervised runs of the same data set, backbone and label count, their
    mean is drawn as a dashed line, so a setting's gain over supervised can be read off the plot.
    """
    written = []
    baselines = baseline_means(rows)
    blocks: dict[tuple[str, str, int | None, str], list[Row]] = defaultdict(list)
    for row in rows:
        if row.setting:
            blocks[(row.dataset, row.backbone, row.labels, row.algo)].append(row)
    for (dataset, backbone, labels, algo), members in sorted(blocks.items(), key=lambda kv: _sortable(kv[0])):
        keys = [key for key, _ in members[0].setting]
        for key in keys:
            values = sorted({_hashable(dict(row.setting)[key]) for row in members}, key=_sort_value)
            if len(values) < 2:
                continue
            axis = _sweep_axis(key, values)
            series: dict[tuple[str, str], dict[str, list[tuple[float, Stat]]]] = defaultdict(lambda: defaultdict(list))
            for row in members:
                setting = dict(row.setting)
                others = ", ".join(f"{k}={format_value(v)}" for k, v in row.setting if k != key)
                for model, stat in row.errors.items():
                    if stat.mean is not None:
                        series[(others, model)][row.selection].append((axis.position(setting[key]), stat))
            if not series:
                continue
            figure, axes = _new_figure(2)
            line_keys = sorted(series, key=lambda k: (k[0], _model_rank(k[1])))
            others_list = sorted({k[0] for k in line_keys})
            colors = _colors(len(others_list))
            show_model = any(k[1] != "student" for k in line_keys)
            for line_key in line_keys:
                others, model = line_key
                color = colors[others_list.index(others)]
                label = (others or algo) + (f" ({model})" if show_model else "")
                for ax, selection in zip(axes, SELECTIONS, strict=True):
                    _errorbar(ax, series[line_key][selection], model, color, label)
            for ax, selection in zip(axes, SELECTIONS, strict=True):
                baseline = baselines.get((dataset, backbone, labels, selection))
                if baseline is not None:
                    ax.axhline(baseline, color="0.4", linestyle="--", linewidth=1, label=BASELINE)
                axis.apply(ax)
                ax.set_ylabel("test error (%)")
                title = f"{algo}, {_where(dataset, backbone, labels)}: {SELECTION_TITLES[selection].lower()}"
                ax.set_title(title, fontsize="medium")
            path = out_dir / f"sweep_{_slug(dataset, backbone, str(labels), algo, key)}.png"
            written.append(_finish_figure(figure, axes, path))
    return written


@dataclass
class _SweepAxis:
    key: str
    values: list[Any]
    kind: str  # "linear", "log", "one_minus_log" or "categorical"

    def position(self, value: Any) -> float:
        if self.kind == "categorical":
            return float(self.values.index(_hashable(value)))
        if self.kind == "one_minus_log":
            return 1.0 - float(value)
        return float(value)

    def apply(self, ax: Any) -> None:
        ticks = [self.position(v) for v in self.values]
        if self.kind in ("log", "one_minus_log"):
            ax.set_xscale("log")
        if self.kind == "one_minus_log":
            # Decay-like values crowd below 1: plot 1 - value on a log axis, read off as the value.
            ax.invert_xaxis()
        ax.set_xticks(ticks, [format_value(v) for v in self.values])
        ax.minorticks_off()
        ax.set_xlabel(self.key)


def _sweep_axis(key: str, values: list[Any]) -> _SweepAxis:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not numeric:
        return _SweepAxis(key, values, "categorical")
    low, high = min(values), max(values)
    if low > 0 and high / low > 10:
        return _SweepAxis(key, values, "log")
    if 0 < low and high < 1 and (1 - low) / (1 - high) > 10:
        return _SweepAxis(key, values, "one_minus_log")
    return _SweepAxis(key, values, "linear")


# --------------------------------------------------------------------------------------------
# Building and the command line


def build_report(run_root: Path, out_dir: Path | None = None) -> Report:
    """Read the run folders under ``run_root`` and write report.md, results.csv and plots.

    ``out_dir`` defaults to ``run_root``. Raises UserInputError when no run folder is found.
    """
    run_root = Path(run_root)
    out_dir = Path(out_dir) if out_dir is not None else run_root
    runs = discover_runs(run_root)
    if not runs:
        raise UserInputError(
            f"no run folders under {str(run_root)!r}: expected folders holding config.json "
            "(made by ssl-bench run, compare or sweep)"
        )
    rows = aggregate(runs)
    warnings = fairness_warnings(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = plot_curves(rows, out_dir) + plot_labels(rows, out_dir) + plot_sweeps(rows, out_dir)
    plot_names = [os.path.relpath(path, out_dir) for path in plots]
    markdown = render_markdown(rows, runs, warnings, plot_names)
    atomic_write_bytes(out_dir / "report.md", markdown.encode())
    atomic_write_bytes(out_dir / "results.csv", render_csv(rows).encode())
    return Report(run_root, out_dir, runs, rows, warnings, plots, markdown)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserInputError(message)


def main(argv: list[str] | None = None) -> int:
    """``ssl-bench report DIR [--out OUT_DIR]``: the tables and plots of existing run folders."""
    parser = _Parser(prog="ssl-bench report", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("run_root", type=Path, help="folder holding run folders (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: DIR)")
    try:
        args = parser.parse_args(argv)
        report = build_report(args.run_root, args.out)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report.print()
    return 0


# --------------------------------------------------------------------------------------------
# Ordering helpers


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def _sort_value(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float)):
        return (0, float(value))
    if value is None:
        return (2, "")
    return (3, str(value))


def _sortable(key: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(_sort_value(item) for item in key)


def _algo_rank(algo: str) -> tuple[int, str]:
    return (_ALGO_ORDER.index(algo), "") if algo in _ALGO_ORDER else (len(_ALGO_ORDER), algo)


def _model_rank(model: str) -> tuple[int, str]:
    order = ("student", "teacher")
    return (order.index(model), "") if model in order else (len(order), model)


def _ordered_models(models: Iterable[str]) -> list[str]:
    return sorted(set(models), key=_model_rank)


def _row_sort_key(row: Row) -> tuple[Any, ...]:
    return (
        SELECTIONS.index(row.selection),
        row.dataset,
        row.backbone,
        _sort_value(row.labels),
        _algo_rank(row.algo),
        tuple((key, _sort_value(value)) for key, value in row.setting),
    )


def _slug(*parts: str) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9_.=]+", "_", part).strip("_") for part in parts if part)
