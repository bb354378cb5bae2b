"""Plots: the report's PNG figures, drawn with matplotlib from the aggregated rows.

Three kinds, each mean ± std over seeds: validation and test error against steps per data set,
backbone and label count (:func:`plot_curves`, the papers' Figure 3); test error against the label
count per data set (:func:`plot_labels`); and test error against each swept setting
(:func:`plot_sweeps`, the papers' Figure 4), on an axis chosen for the values swept. Figures are
drawn without pyplot's global state and written atomically, with no timestamp in the PNG.
"""

from __future__ import annotations

import io
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_toolkit.report.aggregate import (
    BASELINE,
    Row,
    Stat,
    algo_rank,
    baseline_means,
    format_value,
    hashable,
    model_rank,
    ordered_models,
    sort_value,
    sortable,
    where,
)
from ssl_toolkit.report.records import SELECTIONS, numeric_dict
from ssl_toolkit.report.tables import SELECTION_TITLES
from ssl_toolkit.results import atomic_write_bytes


def plot_curves(rows: list[Row], out_dir: Path) -> list[Path]:
    """Validation and test error against steps, mean over seeds with a ±std band (paper Figure 3)."""
    written = []
    figures: dict[tuple[str, str, int | None], list[Row]] = defaultdict(list)
    for row in rows:
        if row.selection == "final":
            figures[(row.dataset, row.backbone, row.labels)].append(row)
    for (dataset, backbone, labels), members in sorted(figures.items(), key=lambda kv: sortable(kv[0])):
        lines = []
        for row in members:
            complete = [run for run in row.runs if run.status == "complete" and run.metrics]
            models = ordered_models(
                model for run in complete for metric in run.metrics for model in numeric_dict(metric.get("test_error"))
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
                        value = numeric_dict(metric.get(split)).get(model)
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
            ax.set_title(f"{where(dataset, backbone, labels)}: {name} error")
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
        keys = sorted(series, key=lambda k: (algo_rank(k[0]), k[1], k[2], model_rank(k[3])))
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
    for (dataset, backbone, labels, algo), members in sorted(blocks.items(), key=lambda kv: sortable(kv[0])):
        keys = [key for key, _ in members[0].setting]
        for key in keys:
            values = sorted({hashable(dict(row.setting)[key]) for row in members}, key=sort_value)
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
            line_keys = sorted(series, key=lambda k: (k[0], model_rank(k[1])))
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
                title = f"{algo}, {where(dataset, backbone, labels)}: {SELECTION_TITLES[selection].lower()}"
                ax.set_title(title, fontsize="medium")
            path = out_dir / f"sweep_{_slug(dataset, backbone, str(labels), algo, key)}.png"
            written.append(_finish_figure(figure, axes, path))
    return written


@dataclass
class _SweepAxis:
    """How the values of one swept setting are laid out along a plot's x axis."""

    key: str
    values: list[Any]
    kind: str  # "linear", "log", "one_minus_log" or "categorical"

    def position(self, value: Any) -> float:
        if self.kind == "categorical":
            return float(self.values.index(hashable(value)))
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


def _new_figure(ncols: int) -> Any:
    # The object-oriented Figure API renders through Agg without touching pyplot's global state.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0 * ncols, 4.2), layout="constrained")
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, list(axes)


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _line_label(algo: str, setting_text: str, model: str, show_model: bool) -> str:
    label = algo + (f" [{setting_text}]" if setting_text else "")
    return f"{label} ({model})" if show_model else label


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


def _slug(*parts: str) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9_.=]+", "_", part).strip("_") for part in parts if part)
