"""Comparison tables and plots built from run folders alone.

``ssl-bench report DIR`` (and ``compare``/``sweep`` once their runs finish) calls
:func:`build_report`, which reads every run folder under ``DIR`` (:mod:`.records`), groups the runs
into rows per data set, backbone, label count, algorithm and swept setting (:mod:`.aggregate`), and
writes ``report.md`` and ``results.csv`` (:mod:`.tables`) and PNG plots (:mod:`.plots`). Each row
gives the test error over seeds in two selections: the **final model** (``final.json``), and the
**best validation** model (for each run and each evaluated model, the ``metrics.jsonl`` row with
the lowest *validation* error, and that row's test error; the test error never selects anything).
``report.md`` is deterministic: sorted rows, fixed float formatting, no timestamps or absolute paths.

A folder made by ``ssl-bench tune`` (it holds ``tune.json``) reports its evaluation runs (``eval/``)
alone, each row with the hyperparameters the tune chose, and lists the trials with their
validation scores in a section of their own, and in ``trials.csv`` (:mod:`.tuning`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_toolkit.errors import UserInputError
from ssl_toolkit.report.aggregate import Row, Stat, aggregate, fairness_warnings, ordered_models
from ssl_toolkit.report.plots import plot_curves, plot_labels, plot_sweeps
from ssl_toolkit.report.records import RunRecord, discover_runs
from ssl_toolkit.report.tables import print_tables, render_csv, render_markdown, report_console
from ssl_toolkit.report.tuning import EVAL_FOLDER, TuneSummary
from ssl_toolkit.results import atomic_write_bytes

__all__ = ["Report", "Row", "RunRecord", "Stat", "build_report"]


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
    tune: TuneSummary | None = None

    @property
    def failed(self) -> list[RunRecord]:
        return [run for run in self.runs if run.status != "complete"]

    @property
    def models(self) -> list[str]:
        return ordered_models(model for row in self.rows for model in row.errors)

    def rows_for(self, selection: str) -> list[Row]:
        """The rows of one selection, in table order."""
        return [row for row in self.rows if row.selection == selection]

    def print(self, console: Any = None) -> None:
        """Print both selections, the fairness warnings and the failed runs as rich tables (and a tune's trials)."""
        console = console or report_console()
        if self.tune is not None:
            self.tune.print(console)
        print_tables(self.rows, self.warnings, self.failed, self.out_dir / "report.md", console)


def build_report(run_root: Path, out_dir: Path | None = None) -> Report:
    """Read the run folders under ``run_root`` and write report.md, results.csv and plots.

    ``out_dir`` defaults to ``run_root``. Raises UserInputError when no run folder is found.
    """
    run_root = Path(run_root)
    out_dir = Path(out_dir) if out_dir is not None else run_root
    tune = TuneSummary.read(run_root) if run_root.is_dir() else None
    if tune is None:
        runs = discover_runs(run_root)
    else:
        # Only the evaluation runs the tune asked for are results; the trials were chosen among, never
        # reported, and runs of evaluation seeds no longer asked for are left out.
        eval_dir = run_root / EVAL_FOLDER
        runs = discover_runs(eval_dir, relative_to=run_root) if eval_dir.is_dir() else []
        runs = [run for run in runs if run.path in tune.eval_folders()]
    if not runs and tune is None:
        raise UserInputError(
            f"no run folders under {str(run_root)!r}: expected folders holding config.json "
            "(made by ssl-bench run, compare, sweep or tune)"
        )
    rows = aggregate(runs)
    warnings = fairness_warnings(runs, tuned=tune.searched_keys() if tune else ())
    preface: list[str] = []
    appendix: list[str] = []
    if tune is not None:
        tune.annotate(rows)
        warnings += tune.warnings()
        if not runs:
            warnings.append("no evaluation run yet: the tune has not finished; rerun the same ssl-bench tune command")
        preface, appendix = tune.protocol_lines(), tune.trial_lines()
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = plot_curves(rows, out_dir) + plot_labels(rows, out_dir) + plot_sweeps(rows, out_dir)
    plot_names = [os.path.relpath(path, out_dir) for path in plots]
    markdown = render_markdown(rows, runs, warnings, plot_names, preface, appendix)
    atomic_write_bytes(out_dir / "report.md", markdown.encode())
    atomic_write_bytes(out_dir / "results.csv", render_csv(rows).encode())
    if tune is not None:
        atomic_write_bytes(out_dir / "trials.csv", tune.render_csv().encode())
    return Report(run_root, out_dir, runs, rows, warnings, plots, markdown, tune)
