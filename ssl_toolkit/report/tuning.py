"""Reports of ``ssl-bench tune`` folders: the evaluation runs are the table, the trials a list apart.

A folder holding ``tune.json`` (written by :mod:`ssl_toolkit.experiments.tune`) is a tune. Its
result table is built from the evaluation runs under ``eval/`` alone, each row with the
hyperparameters the tune chose for that algorithm and label count; the trial runs under
``trials/`` never enter it (their test errors played no part and must not be read as results).
The trials are listed in their own section with their validation scores.

``tune.json`` holds: ``dataset``, ``algos``, ``labels``, ``trials`` (the budget per algorithm),
``tune_seeds``, ``eval_seeds``, ``sampler``, ``sampler_seed``, ``startup_trials``, ``score`` (how a
trial is scored, in words) and ``studies``: per (``labels``, ``algo``) the ``space``, every trial
(``number``, ``state``, ``params``, ``counted`` against the budget, ``val_score``, ``seed_scores``,
``folder``), the ``best`` trial (``number``, ``params``, ``val_score``) and its ``eval`` run folders.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_toolkit.errors import UserInputError
from ssl_toolkit.report.aggregate import Row, algo_rank, format_value

TUNE_SUMMARY = "tune.json"
EVAL_FOLDER = "eval"
TRIALS_FOLDER = "trials"
SCORE_TEXT = ("validation error (%): for each run the lowest over its evaluations and evaluated models, "
              "averaged over the tuning seeds; test error is never read")


@dataclass
class TuneSummary:
    """The contents of a tune folder's ``tune.json``."""

    data: dict[str, Any]

    @classmethod
    def read(cls, root: Path) -> TuneSummary | None:
        """The summary in ``root``, or None when ``root`` is not a tune folder."""
        path = Path(root) / TUNE_SUMMARY
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise UserInputError(f"{path}: unreadable ({error}); rerun ssl-bench tune to rewrite it") from None
        if not isinstance(data, dict) or not isinstance(data.get("studies"), list):
            raise UserInputError(f"{path}: not a tune summary (no list of studies)")
        return cls(data)

    @property
    def studies(self) -> list[dict[str, Any]]:
        return sorted(self.data["studies"], key=lambda s: (s.get("labels") or 0, algo_rank(str(s.get("algo")))))

    def chosen(self, labels: int | None, algo: str) -> dict[str, Any] | None:
        """The best trial of the study at ``labels`` for ``algo``, or None."""
        for study in self.data["studies"]:
            if study.get("labels") == labels and study.get("algo") == algo:
                return study.get("best")
        return None

    def eval_folders(self) -> set[str]:
        """The evaluation run folders of the chosen configurations, relative to the tune folder."""
        return {str(folder) for study in self.data["studies"] for folder in study.get("eval") or []}

    def searched_keys(self) -> set[str]:
        """Every key searched by some study: their values differ between algorithms by design."""
        return {key for study in self.data["studies"] for key in study.get("space") or {}}

    def annotate(self, rows: list[Row]) -> None:
        """Write each row's chosen hyperparameters (and the trial they come from) into ``row.tuned``."""
        for row in rows:
            best = self.chosen(row.labels, row.algo)
            if best is not None:
                row.tuned = f"{params_text(best.get('params') or {})} (trial {best.get('number')})"

    def warnings(self) -> list[str]:
        """What makes the tuned comparison unfair: unequal finished budgets, or a study with nothing to evaluate."""
        found = []
        by_labels: dict[Any, dict[str, int]] = defaultdict(dict)
        for study in self.studies:
            counted = sum(bool(trial.get("counted")) for trial in study.get("trials") or [])
            by_labels[study.get("labels")][str(study.get("algo"))] = counted
            if study.get("best") is None:
                found.append(f"{study.get('algo')} at {study.get('labels')} labels: no trial finished; nothing was "
                             f"evaluated")
        budget = self.data.get("trials")
        for labels, counts in by_labels.items():
            if len(set(counts.values())) > 1 or any(count != budget for count in counts.values()):
                detail = ", ".join(f"{algo} {count}" for algo, count in counts.items())
                found.append(f"{labels} labels: finished trials differ from the budget of {budget} ({detail}); "
                             f"rerun ssl-bench tune to finish the tune")
        return found

    def protocol_lines(self) -> list[str]:
        """The Markdown section that says how the rows below were chosen."""
        data = self.data
        sampler = "TPE" if data.get("sampler") == "tpe" else str(data.get("sampler"))
        if data.get("sampler") == "tpe" and data.get("startup_trials"):
            sampler += f" ({data['startup_trials']} random startup trials)"
        return [
            "## Tuning protocol",
            "",
            f"Every algorithm got the same budget: {data.get('trials')} trials of {sampler}, sampler seed "
            f"{data.get('sampler_seed')}, on the tuning seed(s) {_seeds(data.get('tune_seeds'))}. A trial's score is "
            f"its {data.get('score', SCORE_TEXT)}. The best trial's hyperparameters (*Tuned*) were then trained on the "
            f"evaluation seed(s) {_seeds(data.get('eval_seeds'))}, fresh splits that tuning never saw; the tables "
            f"give those runs (`{EVAL_FOLDER}/`) only. The trial runs (`{TRIALS_FOLDER}/`) are listed under *Trials*.",
            "",
        ]

    def trial_lines(self) -> list[str]:
        """The Markdown section listing every trial with its validation score, the chosen one marked."""
        lines = ["## Trials", "", "Validation score per trial (lower is better); * marks the chosen trial.", ""]
        for study in self.studies:
            best = study.get("best") or {}
            space = ", ".join(f"{key}={text}" for key, text in (study.get("space") or {}).items())
            lines += [f"### {self.data.get('dataset')}, {study.get('labels')} labels, {study.get('algo')}", "",
                      f"Space: {space or 'nothing searched'}.", "",
                      "| Trial | State | Validation score | Hyperparameters |", "|---:|---|---:|---|"]
            for trial in study.get("trials") or []:
                mark = " *" if trial.get("number") == best.get("number") else ""
                lines.append(f"| {trial.get('number')}{mark} | {trial.get('state')} | {_score(trial.get('val_score'))}"
                             f" | {_md(params_text(trial.get('params') or {}))} |")
            lines.append("")
        return lines

    def print(self, console: Any) -> None:
        """One line per study: the finished trials, the best validation score and the choice."""
        from rich.table import Table

        table = Table(title=f"Tuning: {self.data.get('trials')} trials per algorithm, scored on validation only")
        for header in ("Labels", "Algorithm", "Trials", "Best validation", "Chosen"):
            table.add_column(header, justify="right" if header in ("Labels", "Trials", "Best validation") else "left")
        for study in self.studies:
            best = study.get("best")
            trials = study.get("trials") or []
            counted = sum(bool(trial.get("counted")) for trial in trials)
            failed = sum(trial.get("state") == "fail" and bool(trial.get("counted")) for trial in trials)
            table.add_row(str(study.get("labels")), str(study.get("algo")),
                          f"{counted}" + (f" ({failed} failed)" if failed else ""),
                          _score(best.get("val_score")) if best else "—",
                          f"{params_text(best.get('params') or {})} (trial {best.get('number')})" if best else "—")
        console.print(table)

    def render_csv(self) -> str:
        """trials.csv: one line per trial, the chosen one marked; never a test error."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["dataset", "labels", "algorithm", "trial", "state", "counted", "val_score", "chosen",
                         "params"])
        for study in self.studies:
            best = study.get("best") or {}
            for trial in study.get("trials") or []:
                writer.writerow([self.data.get("dataset"), study.get("labels"), study.get("algo"), trial.get("number"),
                                 trial.get("state"), bool(trial.get("counted")),
                                 "" if trial.get("val_score") is None else f"{trial['val_score']:.4f}",
                                 trial.get("number") == best.get("number"),
                                 json.dumps(trial.get("params") or {}, sort_keys=True)])
        return buffer.getvalue()


def params_text(params: dict[str, Any]) -> str:
    """``key=value, ...`` in key order, numbers to 4 significant digits (tune.json holds them exactly)."""
    return ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={format_value(value)}"
                     for key, value in sorted(params.items()))


def _seeds(seeds: Any) -> str:
    return ",".join(str(seed) for seed in seeds) if isinstance(seeds, list) else str(seeds)


def _score(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "—"


def _md(text: str) -> str:
    return text.replace("|", "\\|")
