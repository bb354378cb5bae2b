"""``ssl-bench tune``: the same search budget for every algorithm on validation, then fresh seeds decide.

The protocol is Oliver et al.'s (NeurIPS 2018, "Realistic evaluation of deep semi-supervised
learning algorithms"): every algorithm, the supervised baseline included, gets the same number of
trials over its search space; a trial is scored by **validation** error only; the best trial's
configuration is then trained on evaluation seeds that tuning never saw (fresh splits), and only
those runs' test errors are reported.

The search is Optuna's (TPE, or a grid), one study per (label count, algorithm) in the SQLite file
``DIR/tune.db``. Trials are ordinary run folders, planned and run by the same machinery as
``compare`` (:mod:`.plan`, :mod:`.pool`); a trial whose runs have ``final.json`` is never rerun,
an interrupted one resumes from its checkpoint. Layout of ``DIR``::

    tune.db                                          the Optuna studies
    tune.json                                        the summary the report reads (ssl_toolkit.report.tuning)
    trials/<dataset>-<labels>/<algo>/trial<k>/seed<s>/   one run folder per trial and tuning seed
    eval/<dataset>-<labels>/<algo>/seed<s>/              the chosen configuration on each evaluation seed
    plans/, logs/                                    planned configs and run logs, as for compare

Over 400 lines as one cohesive job: the tune protocol (ask, run, score, choose, evaluate).
"""

from __future__ import annotations

import math
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_toolkit.config import RunConfig, differences, read_config_file
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.evaluation import best_by_validation
from ssl_toolkit.experiments.execution import Execution, execute
from ssl_toolkit.experiments.launch import RunOutcome
from ssl_toolkit.experiments.plan import PlannedRun, check_reusable, resolve_planned
from ssl_toolkit.experiments.search_space import SearchSpace
from ssl_toolkit.report.records import read_json, read_jsonl
from ssl_toolkit.report.tuning import EVAL_FOLDER, SCORE_TEXT, TRIALS_FOLDER, TUNE_SUMMARY, params_text
from ssl_toolkit.results import atomic_write_json

TUNE_DB = "tune.db"
SAMPLERS = ("tpe", "grid")
# TPE draws its first trials at random before it models the results: a third of the budget, at most
# Optuna's default of 10, so a small budget still gets trials guided by the results.
MAX_STARTUP_TRIALS = 10


@dataclass
class TuneRequest:
    """What ``ssl-bench tune`` was asked for; :func:`check_request` refuses bad input before anything runs."""

    algos: list[str]
    dataset: str
    labels: list[int]
    spaces: dict[str, SearchSpace]
    trials: int
    tune_seeds: list[int]
    eval_seeds: list[int]
    root: Path
    values: dict[str, Any]
    config_file: str | None = None
    sampler: str = "tpe"
    sampler_seed: int = 0
    execution: Execution = field(default_factory=Execution)

    def study_name(self, labels: int, algo: str) -> str:
        return f"{self.dataset}-{labels}/{algo}"

    def run_values(self, algo: str, labels: int, seed: int, out: Path, params: dict[str, Any]) -> dict[str, Any]:
        """The values of one run: the command's run settings with a trial's (or the chosen) values on top."""
        run_params, hparams = self.spaces[algo].split(params)
        return {**self.values, **run_params, "hparams": {**(self.values.get("hparams") or {}), **hparams},
                "algo": algo, "dataset": self.dataset, "labels": labels, "seed": seed, "out": str(out)}


def startup_trials(trials: int) -> int:
    """Random trials before TPE models the results: a third of the budget, between 2 and 10."""
    return max(2, min(MAX_STARTUP_TRIALS, trials // 3))


def check_request(request: TuneRequest) -> dict[tuple[int, str], RunConfig]:
    """Refuse bad input before anything is written; returns each study's resolved base config.

    Checked: a positive trial budget and job count, tuning and evaluation seeds that do not
    overlap, every run's config (as ``ssl-bench run`` would resolve it), a validation set, and for
    ``--sampler grid`` an all-choice space with at least ``--trials`` points for every algorithm.
    """
    if request.trials < 1:
        raise UserInputError(f"--trials {request.trials} must be a positive integer")
    if request.sampler_seed < 0:
        raise UserInputError(f"--sampler-seed {request.sampler_seed} is out of range; valid: integers >= 0")
    if request.sampler not in SAMPLERS:
        raise UserInputError(f"--sampler {request.sampler!r} is not valid; valid: {', '.join(SAMPLERS)}")
    shared = sorted(set(request.tune_seeds) & set(request.eval_seeds))
    if shared:
        raise UserInputError(f"seed {shared[0]} is both a tuning and an evaluation seed; the evaluation seeds must "
                             f"be fresh splits that tuning never saw (e.g. --tune-seeds 0 --eval-seeds 1,2,3)")
    bases = {}
    for labels in request.labels:
        for algo in request.algos:
            space = request.spaces[algo]
            name = f"{TRIALS_FOLDER}/{request.study_name(labels, algo)}"
            seed, out = request.tune_seeds[0], request.root / name
            config = resolve_planned(name, request.run_values(algo, labels, seed, out, {}), request.config_file)
            # The space's two corners resolve too, so a searched value that breaks a relation between
            # settings (a labeled batch as large as the batch) is refused now, not by a trial.
            for corner in space.corners():
                resolve_planned(f"{name} with {params_text(corner)}",
                                request.run_values(algo, labels, seed, out, corner), request.config_file)
            if not config.val_size:
                raise UserInputError(f"--val-size {config.val_size}: tuning scores trials on a validation set; "
                                     f"give --val-size N with N > 0")
            if request.sampler == "grid":
                size = math.prod(len(values) for values in space.grid().values())
                if size < request.trials:
                    raise UserInputError(f"--sampler grid: the grid of {algo} has {size} point(s), fewer than "
                                         f"--trials {request.trials}; every algorithm needs the same number of "
                                         f"distinct trials: give more values or fewer trials")
            bases[(labels, algo)] = config
    return bases


def notes(request: TuneRequest, bases: dict[tuple[int, str], RunConfig]) -> list[str]:
    """Things worth a line before the tune starts: one-point spaces, a run value outside a default range."""
    found = []
    for algo in request.algos:
        space = request.spaces[algo]
        if space.size() == 1:
            found.append(f"{algo}: its search space has one point ({_space_text(space)}); its {request.trials} "
                         f"trials all train that configuration")
        config = bases[(request.labels[0], algo)]
        for dim in space.dimensions:
            if dim.source != "default" or dim.is_hparam or dim.spec.kind == "choice":
                continue
            value = getattr(config, dim.key)
            if isinstance(value, (int, float)) and not dim.spec.low <= value <= dim.spec.high:
                found.append(f"{algo}: the run's {dim.key}={value:g} lies outside the default search space "
                             f"{dim.key}={dim.spec.text}; give --space {dim.key}=... if that range does not suit "
                             f"this run (e.g. SGD)")
    return found


def _space_text(space: SearchSpace) -> str:
    return ", ".join(f"{key}={text}" for key, text in space.describe().items()) or "nothing searched"


def validation_score(run_dir: Path) -> float | None:
    """A finished run's validation score: its lowest validation error, over evaluations and evaluated models.

    That is :func:`ssl_toolkit.evaluation.best_by_validation`'s choice per model (the report's
    *best validation* selection), then the better model: the model a user would keep. The test
    error is never read here. None when the run recorded no validation error.
    """
    best = best_by_validation(read_jsonl(Path(run_dir) / "metrics.jsonl", []))
    scores = [chosen["val_error"] for chosen in best.values()]
    return min(scores) if scores else None


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while Optuna writes, so a stopped tune never leaves a half-asked trial."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@dataclass
class Study:
    """One (label count, algorithm) search: its space, base config and Optuna study."""

    labels: int
    algo: str
    space: SearchSpace
    base: RunConfig
    optuna_study: Any

    def trials(self) -> list[Any]:
        return self.optuna_study.get_trials(deepcopy=False)

    def is_whole(self, trial: Any) -> bool:
        """Whether the trial holds a value for every searched setting (Optuna asked it to the end)."""
        return set(trial.params) == set(self.space.keys)

    def counted(self) -> list[Any]:
        """The finished trials that count against the budget: complete or failed, never half-asked."""
        return [t for t in self.trials() if t.state.is_finished() and self.is_whole(t)]

    def running(self) -> list[Any]:
        """Trials asked but not yet told: left by a tune that was stopped, to be run (or resumed) now."""
        from optuna.trial import TrialState

        return [t for t in self.trials() if t.state == TrialState.RUNNING]

    def remaining(self, budget: int) -> int:
        return budget - len(self.counted()) - len(self.running())

    def best(self) -> Any | None:
        """The complete trial with the lowest validation score; ties go to the earliest trial."""
        from optuna.trial import TrialState

        complete = [t for t in self.trials() if t.state == TrialState.COMPLETE and self.is_whole(t)]
        return min(complete, key=lambda t: (t.value, t.number)) if complete else None


@dataclass
class Counts:
    """What the tune did with runs: run now, reused (finished before), failed."""

    run: int = 0
    reused: int = 0
    failed: list[RunOutcome] = field(default_factory=list)

    def add(self, outcomes: Sequence[RunOutcome]) -> None:
        for outcome in outcomes:
            if outcome.status == "reused":
                self.reused += 1
            elif outcome.status == "done":
                self.run += 1
            else:
                self.failed.append(outcome)

    def text(self) -> str:
        return f"{self.run} run now, {self.reused} reused, {len(self.failed)} failed"


class Tuner:
    """Runs a checked :class:`TuneRequest`: the studies in rounds, then the evaluation runs."""

    def __init__(self, request: TuneRequest, bases: dict[tuple[int, str], RunConfig], console: Any) -> None:
        self.request = request
        self.bases = bases
        self.console = console
        self.studies: list[Study] = []
        self.trial_counts = Counts()
        self.eval_counts = Counts()

    # Studies.

    def protocol(self, study_key: tuple[int, str]) -> dict[str, Any]:
        """What a study's trials depend on; a tune resumed with anything else would mix two searches."""
        request = self.request
        labels, algo = study_key
        return {"space": request.spaces[algo].describe(), "tune_seeds": list(request.tune_seeds),
                "sampler": request.sampler, "sampler_seed": request.sampler_seed,
                "config": self.bases[study_key].to_json()}

    def open_studies(self) -> None:
        """Load (or create) every study, refusing a folder whose studies were made with other settings."""
        import optuna

        request = self.request
        storage = optuna.storages.RDBStorage(f"sqlite:///{(request.root / TUNE_DB).resolve()}")
        existing = set(optuna.study.get_all_study_names(storage))
        keys = [(labels, algo) for labels in request.labels for algo in request.algos]
        others = sorted(existing - {request.study_name(*key) for key in keys})
        if others:
            # One tune folder is one comparison: its summary and report cover exactly the studies asked for.
            raise UserInputError(f"{request.root} holds a tune of {', '.join(others)}, which this command does not "
                                 f"ask for; give the same --dataset, --algos and --labels to resume it, or another "
                                 f"--out")
        for key in keys:
            name = request.study_name(*key)
            if name in existing:
                saved = optuna.load_study(study_name=name, storage=storage).user_attrs.get("protocol", {})
                self._check_protocol(name, saved, self.protocol(key))
        for key in keys:
            name = request.study_name(*key)
            with signals_deferred():
                study = optuna.create_study(study_name=name, storage=storage, direction="minimize",
                                            load_if_exists=True)
                if name not in existing:
                    study.set_user_attr("protocol", self.protocol(key))
            self.studies.append(Study(key[0], key[1], request.spaces[key[1]], self.bases[key], study))
        for study in self.studies:
            finished = len(study.counted())
            if finished > request.trials:
                raise UserInputError(f"{request.root}: {study.algo} at {study.labels} labels has {finished} finished "
                                     f"trials, more than --trials {request.trials}; every algorithm must get the "
                                     f"same budget: give --trials {finished} or more")

    def _check_protocol(self, name: str, saved: dict[str, Any], now: dict[str, Any]) -> None:
        changed = [str(d) for d in differences(saved.get("config") or {}, now["config"])]
        for key in ("space", "tune_seeds", "sampler", "sampler_seed"):
            if saved.get(key) != now[key]:
                changed.append(f"{key}: {saved.get(key)!r} then, {now[key]!r} now")
        if changed:
            raise UserInputError(f"{self.request.root} holds a tune of {name} made with other settings "
                                 f"({'; '.join(changed)}); use another --out, or the same settings to resume it")

    def sampler(self, study: Study, number: int) -> Any:
        """The sampler for trial ``number`` of ``study``, seeded by the tune's seed and the trial's number.

        Seeding per trial makes a trial's values depend only on the results before it, so a tune
        that was stopped and resumed asks what an uninterrupted one would have asked.
        """
        import numpy as np
        import optuna

        request = self.request
        if request.sampler == "grid":
            # The grid is shuffled once by the tune's seed and trial k takes point k: resumable as is.
            return optuna.samplers.GridSampler(study.space.grid(), seed=request.sampler_seed)
        seed = int(np.random.SeedSequence([request.sampler_seed, number]).generate_state(1)[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(request.trials),
                                              multivariate=True, constant_liar=True)

    # Trials.

    def trial_runs(self, study: Study, number: int, params: dict[str, Any]) -> list[PlannedRun]:
        request = self.request
        runs = []
        for seed in request.tune_seeds:
            name = f"{TRIALS_FOLDER}/{request.study_name(study.labels, study.algo)}/trial{number}/seed{seed}"
            values = request.run_values(study.algo, study.labels, seed, request.root / name, params)
            runs.append(PlannedRun(name, resolve_planned(name, values, request.config_file), dict(params)))
        return runs

    def ask_round(self) -> list[tuple[Study, int, dict[str, Any], list[PlannedRun]]]:
        """The next round: trials left running by a stopped tune, else new ones from each unfinished study.

        Each study asks ``ceil(slots / (studies x tuning seeds))`` trials (at least one), so the pool
        has work for every job slot while each study's search stays as sequential as the slots allow.
        """
        from optuna.trial import TrialState

        request = self.request
        active = [s for s in self.studies if s.running() or s.remaining(request.trials) > 0]
        if not active:
            return []
        slots = request.execution.slots or len(active) * len(request.tune_seeds)
        per_study = max(1, math.ceil(slots / (len(active) * len(request.tune_seeds))))
        batch = []
        with signals_deferred():
            for study in active:
                pending = study.running()
                for trial in pending:
                    if study.is_whole(trial):
                        batch.append((study, trial.number, dict(trial.params)))
                    else:  # asked by a tune killed mid-ask: never run, not counted against the budget
                        study.optuna_study.tell(trial.number, state=TrialState.FAIL)
                if pending:
                    continue
                for _ in range(min(per_study, study.remaining(request.trials))):
                    number = len(study.trials())
                    study.optuna_study.sampler = self.sampler(study, number)
                    trial = study.optuna_study.ask(study.space.distributions())
                    batch.append((study, trial.number, dict(trial.params)))
        return [(study, number, params, self.trial_runs(study, number, params)) for study, number, params in batch]

    def tell(self, study: Study, number: int, runs: Sequence[PlannedRun]) -> float | None:
        """Score a trial from its run folders and tell Optuna; a trial with a failed run fails."""
        from optuna.trial import TrialState

        scores = [validation_score(run.run_dir) if run.finished else None for run in runs]
        value = None if any(score is None for score in scores) else sum(scores) / len(scores)
        with signals_deferred():
            if value is None:
                study.optuna_study.tell(number, state=TrialState.FAIL)
            else:
                study.optuna_study.tell(number, value)
        return value

    def run_trials(self) -> None:
        request = self.request
        while True:
            batch = self.ask_round()
            if not batch:
                return
            runs = [run for *_, trial_runs in batch for run in trial_runs]
            check_reusable(runs)
            self.trial_counts.add(execute(runs, request.root, request.execution, self.console))
            for study, number, params, trial_runs in batch:
                value = self.tell(study, number, trial_runs)
                done = len(study.counted())
                score = "failed" if value is None else f"validation {value:.2f} %"
                self.console.print(f"trial {number} of {study.algo} at {study.labels} labels ({done}/{request.trials})"
                                   f": {score}  [{params_text(params)}]", highlight=False, markup=False)
            self.write_summary()

    # Evaluation.

    def eval_runs(self) -> list[PlannedRun]:
        """The best trial's configuration of each study on every evaluation seed."""
        request = self.request
        runs = []
        for study in self.studies:
            best = study.best()
            if best is None:
                continue
            for seed in request.eval_seeds:
                name = f"{EVAL_FOLDER}/{request.study_name(study.labels, study.algo)}/seed{seed}"
                values = request.run_values(study.algo, study.labels, seed, request.root / name, best.params)
                runs.append(PlannedRun(name, resolve_planned(name, values, request.config_file), dict(best.params)))
        return runs

    def drop_stale(self, runs: Sequence[PlannedRun]) -> None:
        """Remove evaluation runs of an earlier choice (a larger budget found a better trial): tune owns them."""
        for run in runs:
            saved = read_json(run.run_dir / "config.json", [])
            if saved is not None and differences(saved, run.config):
                changed = ", ".join(map(str, differences(saved, run.config)))
                self.console.print(f"{run.name}: the chosen configuration changed ({changed}); rerunning it",
                                   highlight=False, markup=False)
                shutil.rmtree(run.run_dir)

    def run_eval(self) -> None:
        runs = self.eval_runs()
        self.drop_stale(runs)
        check_reusable(runs)
        if runs:
            self.eval_counts.add(execute(runs, self.request.root, self.request.execution, self.console))

    # The summary.

    def summary(self) -> dict[str, Any]:
        """tune.json: the protocol, every trial with its validation score, the choice, the evaluation runs."""
        request = self.request
        studies = []
        for study in self.studies:
            best = study.best()
            trials = []
            for trial in study.trials():
                folder = f"{TRIALS_FOLDER}/{request.study_name(study.labels, study.algo)}/trial{trial.number}"
                seed_scores = {}
                for seed in request.tune_seeds:
                    run_dir = request.root / folder / f"seed{seed}"
                    if (run_dir / "final.json").exists():
                        seed_scores[str(seed)] = validation_score(run_dir)
                trials.append({"number": trial.number, "state": trial.state.name.lower(), "params": trial.params,
                               "counted": trial.state.is_finished() and study.is_whole(trial),
                               "val_score": trial.value, "seed_scores": seed_scores, "folder": folder})
            studies.append({
                "labels": study.labels, "algo": study.algo, "space": study.space.describe(),
                "trials": trials,
                "best": None if best is None else {"number": best.number, "params": best.params,
                                                   "val_score": best.value},
                "eval": [f"{EVAL_FOLDER}/{request.study_name(study.labels, study.algo)}/seed{seed}"
                         for seed in request.eval_seeds] if best is not None else [],
            })
        return {"dataset": request.dataset, "algos": request.algos, "labels": request.labels,
                "trials": request.trials, "tune_seeds": request.tune_seeds, "eval_seeds": request.eval_seeds,
                "sampler": request.sampler, "sampler_seed": request.sampler_seed,
                "startup_trials": startup_trials(request.trials) if request.sampler == "tpe" else None,
                "score": SCORE_TEXT, "studies": studies}

    def write_summary(self) -> None:
        if self.studies:
            atomic_write_json(self.request.root / TUNE_SUMMARY, self.summary())


def _sigterm_interrupts() -> Any:
    """Make SIGTERM stop the tune as Ctrl-C does (runs in flight checkpoint); returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def run_tune(request: TuneRequest) -> int:
    """Check the request, tune every study, evaluate the choices, print the report; the exit code.

    0 when every trial and evaluation run finished, 1 when any failed (the report says which), 130
    when stopped (SIGINT or SIGTERM): rerunning the same command resumes the tune.
    """
    from rich.console import Console

    from ssl_toolkit.report import build_report

    console = Console(file=sys.stderr)
    if request.config_file:
        read_config_file(request.config_file)
    bases = check_request(request)
    for note in notes(request, bases):
        console.print(f"note: {note}", highlight=False, markup=False)
    request.root.mkdir(parents=True, exist_ok=True)
    tuner = Tuner(request, bases, console)
    previous = _sigterm_interrupts()
    try:
        tuner.open_studies()
        for algo in request.algos:
            console.print(f"{algo}: {request.trials} trials over {_space_text(request.spaces[algo])}",
                          highlight=False, markup=False)
        tuner.run_trials()
        tuner.run_eval()
    except KeyboardInterrupt:
        tuner.write_summary()
        console.print("interrupted: rerun the same command to resume the tune (finished trials are kept)",
                      highlight=False)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    tuner.write_summary()
    build_report(request.root).print()
    missing = [f"{study.algo} at {study.labels} labels" for study in tuner.studies if study.best() is None]
    console.print(f"trials: {tuner.trial_counts.text()}; evaluation runs: {tuner.eval_counts.text()}",
                  highlight=False)
    for outcome in tuner.trial_counts.failed + tuner.eval_counts.failed:
        console.print(f"failed: {outcome.run.name}: {outcome.error}", highlight=False, markup=False, soft_wrap=True)
    for name in missing:
        console.print(f"no trial of {name} finished: nothing to evaluate", highlight=False)
    return 1 if tuner.trial_counts.failed or tuner.eval_counts.failed or missing else 0
