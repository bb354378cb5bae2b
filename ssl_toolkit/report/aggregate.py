"""Aggregation: run records become table rows, with their gains and the fairness warnings.

Runs are grouped per data set, backbone, label count, algorithm and swept setting (the params
that differ between runs of one block); each group gives one :class:`Row` per selection holding
the test errors over seeds (:class:`Stat`) and the gain over the supervised baseline.
:func:`fairness_warnings` reports what makes the comparison unfair: different splits for one seed,
shared settings or thread counts that differ between the runs compared. The row order and the
way a setting's value is written are defined here too, so tables and plots agree on both.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ssl_toolkit.report.records import SELECTIONS, RunRecord

BASELINE = "supervised"
_MODEL_ORDER = ("student", "teacher")

Block = tuple[str, str, int | None, str]


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
    # A tune's report: the hyperparameters the tune chose for this row's runs (empty elsewhere).
    tuned: str = ""

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


def format_value(value: Any) -> str:
    """A config value as shown in tables, plots and warnings, folder-independent and stable across builds."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def where(dataset: str, backbone: str, labels: int | None) -> str:
    """The block of a comparison in words: ``digits (tiny_cnn), 50 labels``."""
    return f"{dataset}{f' ({backbone})' if backbone else ''}, {labels} labels"


def swept_keys(runs: Sequence[RunRecord]) -> dict[Block, list[str]]:
    """Per (dataset, backbone, labels, algo): the params whose values differ between its runs.

    Differences are looked for within one label count, so values that a run derives from the label
    count (the papers' ``w_max = scale * M / N``) do not pass for a sweep.
    """
    blocks: dict[Block, list[RunRecord]] = defaultdict(list)
    for run in runs:
        blocks[_block_key(run)].append(run)
    keys = {}
    for block, members in blocks.items():
        # Runs that never wrote config.json know only their grid values; they join a row, not define one.
        members = [run for run in members if run.has_config] or members
        names = sorted({name for run in members for name in run.params})
        keys[block] = [name for name in names if len({hashable(run.params.get(name)) for run in members}) > 1]
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
            errors = {model: per_model[model] for model in ordered_models(per_model)}
            rows.append(Row(selection, dataset, backbone, labels, algo, setting, errors, members))
    rows.sort(key=_row_sort_key)
    _fill_gains(rows)
    return rows


def baseline_means(rows: list[Row]) -> dict[tuple[str, str, int | None, str], float]:
    """The supervised baseline's mean student error per (data set, backbone, labels, selection)."""
    means = {}
    for row in rows:
        stat = row.errors.get("student")
        if row.algo == BASELINE and not row.setting and stat is not None and stat.mean is not None:
            means[(row.dataset, row.backbone, row.labels, row.selection)] = stat.mean
    return means


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


def fairness_warnings(runs: Sequence[RunRecord], tuned: Iterable[str] = ()) -> list[str]:
    """Differences that make a comparison unfair: splits, shared settings or thread counts that differ.

    Runs with the same data set, label count and seed must share their split; algorithms compared
    at one data set, backbone and label count must share budget and optimizer settings, and all
    their runs one thread count, since results on a CPU depend on it. ``tuned`` settings (a tune's
    searched keys) may differ: each algorithm got the same search for them.
    """
    tuned = set(tuned)
    warnings = []
    splits: dict[tuple[Any, ...], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.split_digest is not None:
            key = (run.dataset, run.labels, run.seed, hashable(run.params.get("val_size")))
            splits[key][run.split_digest].append(run.path)
    for (dataset, labels, seed, _), digests in sorted(splits.items(), key=lambda kv: sortable(kv[0])):
        if len(digests) > 1:
            paths = "; ".join(" ".join(sorted(paths)) for paths in sorted(digests.values()))
            warnings.append(f"{dataset}, {labels} labels, seed {seed}: runs use different splits ({paths})")

    shared: dict[tuple[Any, ...], list[RunRecord]] = defaultdict(list)
    for run in runs:
        if run.status == "complete":
            shared[(run.dataset, run.backbone, run.labels)].append(run)
    for (dataset, backbone, labels), members in sorted(shared.items(), key=lambda kv: sortable(kv[0])):
        block = where(dataset, backbone, labels)
        keys = sorted({key for run in members for key in run.shared_keys} - tuned)
        for key in keys:
            by_algo: dict[str, set[Any]] = defaultdict(set)
            for run in members:
                by_algo[run.algo].add(hashable(run.params.get(key)))
            if len({frozenset(values) for values in by_algo.values()}) > 1:
                detail = ", ".join(
                    f"{algo} {'/'.join(format_value(v) for v in sorted(values, key=sort_value))}"
                    for algo, values in sorted(by_algo.items(), key=lambda kv: algo_rank(kv[0]))
                )
                warnings.append(f"{block}: {key} differs between algorithms ({detail})")
        threads = sorted({run.threads for run in members}, key=sort_value)
        if len(threads) > 1:
            shown = "/".join("default" if count is None else str(count) for count in threads)
            warnings.append(f"{block}: threads differs between runs ({shown}); results on a CPU depend on the "
                            "thread count")
    return warnings


# Ordering: rows, models and setting values sort the same way in every table and plot.


def hashable(value: Any) -> Any:
    """``value`` as a set member or dict key: dicts and lists become their JSON text."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def sort_value(value: Any) -> tuple[int, Any]:
    """A sort key that orders numbers, then booleans, then None, then text, without comparing across types."""
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float)):
        return (0, float(value))
    if value is None:
        return (2, "")
    return (3, str(value))


def sortable(key: Iterable[Any]) -> tuple[Any, ...]:
    """A sort key for a tuple of mixed values, element by element with :func:`sort_value`."""
    return tuple(sort_value(item) for item in key)


def algo_rank(algo: str) -> tuple[int, str]:
    """The paper's algorithms in the paper's order, then any other algorithm alphabetically."""
    # The baseline first, then every other algorithm by name: the report names no algorithm but its baseline.
    return (0, "") if algo == BASELINE else (1, algo)


def model_rank(model: str) -> tuple[int, str]:
    """The student first, then the teacher, then any other model alphabetically."""
    return (_MODEL_ORDER.index(model), "") if model in _MODEL_ORDER else (len(_MODEL_ORDER), model)


def ordered_models(models: Iterable[str]) -> list[str]:
    """The distinct models in ``models``, in :func:`model_rank` order."""
    return sorted(set(models), key=model_rank)


def _block_key(run: RunRecord) -> Block:
    return (run.dataset, run.backbone, run.labels, run.algo)


def _row_sort_key(row: Row) -> tuple[Any, ...]:
    return (
        SELECTIONS.index(row.selection),
        row.dataset,
        row.backbone,
        sort_value(row.labels),
        algo_rank(row.algo),
        tuple((key, sort_value(value)) for key, value in row.setting),
    )
