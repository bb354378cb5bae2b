"""Formatting: the rows of a report as text, in the three forms the report is read in.

One set of headers and cells (:func:`headers`, :func:`cells`) feeds the rich tables printed on the
terminal (:func:`print_tables`), the Markdown of ``report.md`` (:func:`render_markdown`) and, in
long format, ``results.csv`` (:func:`render_csv`). Output depends only on the rows, runs and
warnings given, with fixed float formatting, so two builds of one run root are byte-identical.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssl_toolkit.report.aggregate import BASELINE, Row, Stat, ordered_models
from ssl_toolkit.report.records import SELECTIONS, RunRecord

SELECTION_TITLES = {"final": "Final model", "best_val": "Best validation"}
SELECTION_NOTES = {
    "final": "Test error of the model at the end of training (`final.json`).",
    "best_val": (
        "Test error of each run's model at the evaluation with the lowest validation error "
        "(`metrics.jsonl`), chosen separately for the student and the teacher. "
        "Selection uses validation error only, never test error."
    ),
}
_LEFT_COLUMNS = ("Dataset", "Backbone", "Algorithm", "Setting", "Tuned")
_CSV_HEADER = (
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
)


def headers(models: list[str], show_backbone: bool, show_setting: bool, show_tuned: bool = False) -> list[str]:
    """The column headers of a selection's table; the backbone and setting columns only when they vary,
    the tuned hyperparameters only in a tune's report."""
    names = ["Dataset"]
    if show_backbone:
        names.append("Backbone")
    names += ["Labels", "Algorithm"]
    if show_setting:
        names.append("Setting")
    if show_tuned:
        names.append("Tuned")
    names.append("n")
    names += [f"{model.capitalize()} error" for model in models]
    names += [f"Gain ({model})" for model in models]
    names.append("Wall time (s)")
    return names


def cells(row: Row, models: list[str], show_backbone: bool, show_setting: bool, show_tuned: bool = False) -> list[str]:
    """The cells of one row, matching :func:`headers` called with the same arguments."""
    out = [row.dataset]
    if show_backbone:
        out.append(row.backbone)
    out += [str(row.labels), row.algo]
    if show_setting:
        out.append(row.setting_text)
    if show_tuned:
        out.append(row.tuned or "—")
    n = max((stat.n for stat in row.errors.values()), default=0)
    out.append(f"{n} ({row.n_failed} failed)" if row.n_failed else str(n))
    out += [_fmt_stat(row.errors.get(model)) for model in models]
    for model in models:
        if row.algo == BASELINE:
            out.append("baseline" if model in row.errors else "—")
        else:
            out.append(_fmt(row.gain.get(model), signed=True))
    out.append("—" if row.wall_time_s is None else f"{row.wall_time_s:.1f}")
    return out


def report_console() -> Any:
    """A rich console for the report: the terminal's, or one 160 columns wide when output is piped."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        # Piped or captured output has no width of its own; rich's 80 columns would wrap the rows.
        console = Console(width=max(console.width, 160))
    return console


def print_tables(
    rows: list[Row], warnings: list[str], failed: list[RunRecord], report_path: Path, console: Any = None
) -> None:
    """Print both selections, the fairness warnings and the failed runs as rich tables."""
    from rich.table import Table

    console = console or report_console()
    columns = _columns(rows)
    for selection in SELECTIONS:
        table = Table(title=f"{SELECTION_TITLES[selection]}: test error (%), mean ± std over seeds")
        for header in headers(*columns):
            table.add_column(header, justify="left" if header in _LEFT_COLUMNS else "right",
                             no_wrap=header != "Tuned")
        for row in rows:
            if row.selection == selection:
                table.add_row(*cells(row, *columns))
        console.print(table)
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", markup=True, highlight=False)
    if failed:
        table = Table(title="Failed or incomplete runs")
        for header in ("Run", "Status", "Error"):
            table.add_column(header)
        for run in failed:
            table.add_row(run.path, run.status, run.error or "")
        console.print(table)
    console.print(f"report: {report_path}", highlight=False)


def render_markdown(report_rows: list[Row], runs: list[RunRecord], warnings: list[str], plots: list[str],
                    preface: Sequence[str] = (), appendix: Sequence[str] = ()) -> str:
    """The report as Markdown; depends only on its inputs, so two builds are byte-identical.

    ``preface`` lines go before the tables and ``appendix`` lines at the end (a tune's protocol and trials).
    """
    columns = _columns(report_rows)
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
        *preface,
    ]
    for selection in SELECTIONS:
        names = headers(*columns)
        lines += [f"## {SELECTION_TITLES[selection]}", "", SELECTION_NOTES[selection], ""]
        lines.append("| " + " | ".join(names) + " |")
        lines.append("|" + "|".join("---" if h in _LEFT_COLUMNS else "---:" for h in names) + "|")
        for row in report_rows:
            if row.selection == selection:
                row_cells = cells(row, *columns)
                lines.append("| " + " | ".join(_md_escape(cell) for cell in row_cells) + " |")
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
    lines += appendix
    return "\n".join(lines)


def render_csv(report_rows: list[Row]) -> str:
    """One line per row and model (long format), fixed formatting, failures counted per row.

    A tune's report adds a last column, ``tuned``: the chosen hyperparameters of the row.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    show_tuned = any(row.tuned for row in report_rows)
    writer.writerow(_CSV_HEADER + (("tuned",) if show_tuned else ()))
    for row in report_rows:
        for model in list(row.errors) or [""]:
            stat = row.errors.get(model)
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
                    _csv_float(row.gain.get(model)),
                    _csv_float(row.wall_time_s),
                    row.n_failed,
                    *((row.tuned,) if show_tuned else ()),
                ]
            )
    return buffer.getvalue()


def _columns(rows: list[Row]) -> tuple[list[str], bool, bool, bool]:
    # The model columns, and whether the backbone, setting and tuned columns are worth showing.
    models = ordered_models(model for row in rows for model in row.errors)
    return models, len({row.backbone for row in rows}) > 1, any(row.setting for row in rows), any(
        row.tuned for row in rows)


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


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _csv_float(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
