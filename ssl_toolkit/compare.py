"""``ssl-bench compare`` and ``ssl-bench sweep``: many runs under one fair protocol, then the report.

Every run is ``python -m ssl_toolkit run`` in its own process, with the same data set, label
count, seed, validation size and run flags for every algorithm, so the splits (a deterministic
function of those) and the budget are identical across the algorithms compared. Finished runs are
reused, interrupted ones resumed, failed ones recorded in ``error.json`` and reported as failed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_toolkit.errors import UserInputError

# Flags that compare/sweep set for every run themselves; the user gives the lists instead.
RESERVED_RUN_FLAGS = {
    "--algo": "--algos (compare) or --algo (sweep)",
    "--dataset": "--dataset",
    "--labels": "--labels",
    "--seed": "--seeds",
    "--out": "--out (the folder that holds all runs)",
    "--overwrite": "nothing: finished runs are reused, interrupted ones resumed",
    "--resume": "nothing: interrupted runs are resumed automatically",
    "--threads": "--jobs (threads per run = CPU cores // jobs)",
}
# Config keys that may differ between a finished run and the same run requested again.
REUSE_IGNORED_KEYS = {"out", "threads", "device", "data_dir"}
STDERR_TAIL_CHARS = 4000


@dataclass
class PlannedRun:
    """One ``ssl-bench run`` of a comparison: its identity, folder and command-line flags."""

    algo: str
    dataset: str
    labels: int
    seed: int
    setting: tuple[tuple[str, str], ...]
    run_dir: Path
    name: str
    run_args: list[str]
    expected_config: dict[str, Any] | None = None

    def command(self, threads: int, extra: Sequence[str] = ()) -> list[str]:
        """The subprocess command line of this run."""
        return [
            sys.executable,
            "-m",
            "ssl_toolkit",
            "run",
            *self.run_args,
            "--out",
            str(self.run_dir),
            "--threads",
            str(threads),
            *extra,
        ]


@dataclass
class RunOutcome:
    """What happened to one planned run: ``reused``, ``done`` or ``failed`` (with its error)."""

    run: PlannedRun
    status: str
    exit_code: int | None = None
    error: str | None = None
    seconds: float = 0.0
    attempts: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Parsing


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserInputError(f"{self.prog}: {message}")


def parse_names(flag: str, text: str) -> list[str]:
    """A comma list of names, without empties or duplicates."""
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise UserInputError(f"{flag} {text!r} has an empty entry; give a comma list such as a,b,c")
    duplicates = sorted({item for item in items if items.count(item) > 1})
    if duplicates:
        raise UserInputError(f"{flag} {text!r} names {duplicates[0]!r} twice")
    return items


def parse_ints(flag: str, text: str, minimum: int) -> list[int]:
    """A comma list of distinct integers, each at least ``minimum``."""
    values = []
    for item in parse_names(flag, text):
        try:
            value = int(item)
        except ValueError:
            raise UserInputError(f"{flag}: {item!r} is not an integer (e.g. 0,1,2)") from None
        if value < minimum:
            raise UserInputError(f"{flag}: {value} is out of range; valid: integers >= {minimum}")
        values.append(value)
    if len(set(values)) != len(values):
        raise UserInputError(f"{flag} {text!r} repeats a value")
    return values


def parse_algorithms(flag: str, text: str) -> list[str]:
    """A comma list of registered algorithm names."""
    from ssl_toolkit.registry import list_algorithms

    known = list_algorithms()
    names = parse_names(flag, text)
    for name in names:
        if name not in known:
            raise UserInputError(f"{flag}: unknown algorithm {name!r}; valid: {', '.join(known)}")
    return names


def parse_grid(items: Sequence[str], algo: str) -> list[tuple[str, list[str]]]:
    """``--grid KEY=v1,v2`` options: KEY is ``labels``, ``backbone`` or a hyperparameter of ``algo``."""
    import dataclasses

    from ssl_toolkit.registry import get_algorithm

    hyperparameters = [f.name for f in dataclasses.fields(get_algorithm(algo).Config)]
    valid = ["labels", "backbone", *hyperparameters]
    grid: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise UserInputError(f"--grid {item!r} is not KEY=v1,v2,... (e.g. --grid ema_decay=0.99,0.999)")
        if key not in valid:
            raise UserInputError(f"--grid {key}: not a grid key for {algo}; valid: {', '.join(valid)}")
        if any(key == seen for seen, _ in grid):
            raise UserInputError(f"--grid {key} is given twice; put all its values in one --grid")
        if key == "labels":
            grid.append((key, [str(v) for v in parse_ints("--grid labels", values, 1)]))
        else:
            grid.append((key, parse_names(f"--grid {key}", values)))
    return grid


def _flag_name(token: str) -> str:
    return token.split("=", 1)[0]


def check_run_flags(run_flags: Sequence[str], forbidden: dict[str, str]) -> None:
    """Refuse flags that the comparison sets per run, naming what to use instead."""
    for token in run_flags:
        flag = _flag_name(token)
        if flag in forbidden:
            raise UserInputError(f"{flag} is set per run by this command; use {forbidden[flag]} instead")


def _set_keys(run_flags: Sequence[str]) -> set[str]:
    keys = set()
    tokens = list(run_flags)
    for i, token in enumerate(tokens):
        if token == "--set" and i + 1 < len(tokens):
            keys.add(tokens[i + 1].partition("=")[0].strip())
        elif token.startswith("--set="):
            keys.add(token[len("--set=") :].partition("=")[0].strip())
    return keys


# --------------------------------------------------------------------------------------------
# Planning


def _folder_value(value: str) -> str:
    # Grid values become folder names; anything that is not safe in a path becomes "_".
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", value)


def plan_compare(
    algos: Sequence[str],
    dataset: str,
    labels: Sequence[int],
    seeds: Sequence[int],
    out: Path,
    run_flags: Sequence[str],
) -> list[PlannedRun]:
    """Every (label count, seed, algorithm), seeds before algorithms so early results are comparable."""
    runs = []
    for n_labels, seed, algo in itertools.product(labels, seeds, algos):
        name = f"{dataset}-{n_labels}/{algo}/seed{seed}"
        args = ["--algo", algo, "--dataset", dataset, "--labels", str(n_labels), "--seed", str(seed)]
        runs.append(PlannedRun(algo, dataset, n_labels, seed, (), out / name, name, [*args, *run_flags]))
    return runs


def plan_sweep(
    algo: str,
    dataset: str,
    labels: Sequence[int],
    grid: Sequence[tuple[str, list[str]]],
    seeds: Sequence[int],
    out: Path,
    run_flags: Sequence[str],
) -> list[PlannedRun]:
    """Every label count x grid point x seed; the grid point names the folder (``key=value,...``)."""
    label_values = dict(grid).get("labels")
    label_list = [int(v) for v in label_values] if label_values else list(labels)
    axes = [(key, values) for key, values in grid if key != "labels"]
    runs = []
    for n_labels in label_list:
        for point in itertools.product(*(values for _, values in axes)):
            setting = tuple((key, value) for (key, _), value in zip(axes, point, strict=True))
            folder = ",".join(f"{key}={_folder_value(value)}" for key, value in setting)
            for seed in seeds:
                name = "/".join(filter(None, [f"{dataset}-{n_labels}", algo, folder, f"seed{seed}"]))
                args = ["--algo", algo, "--dataset", dataset, "--labels", str(n_labels), "--seed", str(seed)]
                for key, value in setting:
                    args += ["--backbone", value] if key == "backbone" else ["--set", f"{key}={value}"]
                args += run_flags
                runs.append(PlannedRun(algo, dataset, n_labels, seed, setting, out / name, name, args))
    return runs


def resolve_planned(runs: Sequence[PlannedRun]) -> None:
    """Resolve each run's config as ``ssl-bench run`` would, so bad flags fail before any training.

    Names and types of every flag and hyperparameter are checked here; ranges that need the data
    (checked when a run starts) surface as that run's failure.
    """
    from ssl_toolkit.cli import build_parser, cli_values
    from ssl_toolkit.config import resolve_run_config

    parser = build_parser()
    for run in runs:
        try:
            args = parser.parse_args(["run", *run.command(threads=1)[4:]])
            config = resolve_run_config(cli_values(args), args.config)
        except UserInputError as error:
            raise UserInputError(f"{run.name}: {error}") from None
        run.expected_config = json.loads(json.dumps(config.to_json()))


def config_differences(saved: dict[str, Any], expected: dict[str, Any], algo: str) -> list[tuple[str, Any, Any]]:
    """(key, saved value, requested value) for each config value a finished run would not match.

    The saved config lists every hyperparameter, the requested one only those given with --set;
    the others are compared with the algorithm's defaults.
    """
    import dataclasses

    from ssl_toolkit.registry import get_algorithm

    differing = []
    for key in sorted(set(saved) | set(expected)):
        if key in REUSE_IGNORED_KEYS or key == "hparams":
            continue
        if saved.get(key) != expected.get(key):
            differing.append((key, saved.get(key), expected.get(key)))
    saved_h = saved.get("hparams") or {}
    given_h = expected.get("hparams") or {}
    fields = dataclasses.fields(get_algorithm(algo).Config)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    wanted = json.loads(json.dumps({**defaults, **given_h}))
    for key in sorted(set(saved_h) | set(given_h)):
        mismatch = key in wanted and saved_h.get(key, wanted[key]) != wanted[key]
        if mismatch or (key in given_h and key not in saved_h):
            differing.append((f"hparams.{key}", saved_h.get(key), wanted.get(key)))
    return differing


def check_reusable(runs: Sequence[PlannedRun]) -> None:
    """A finished run is reused only if it was trained with the config requested now."""
    for run in runs:
        config_path = run.run_dir / "config.json"
        if not (run.run_dir / "final.json").exists() or run.expected_config is None:
            continue
        try:
            saved = json.loads(config_path.read_text())
        except (OSError, ValueError) as error:
            raise UserInputError(f"{run.name}: finished, but config.json is unreadable ({error})") from None
        differing = config_differences(saved, run.expected_config, run.algo)
        if differing:
            detail = ", ".join(f"{key}: {then!r} then, {now!r} now" for key, then, now in differing)
            raise UserInputError(
                f"{run.name} finished with a different config ({detail}); use another --out, "
                f"or delete that run folder to rerun it"
            )


# --------------------------------------------------------------------------------------------
# Execution


def threads_per_job(jobs: int) -> int:
    """CPU threads for each of ``jobs`` concurrent runs, so that together they fill, not oversubscribe."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    return max(1, cores // jobs)


class _Launcher:
    """Runs planned runs as subprocesses, recording failures and tracking what is in flight."""

    def __init__(self, out: Path, threads: int) -> None:
        self.out = out
        self.threads = threads
        self.lock = threading.Lock()
        self.processes: set[subprocess.Popen] = set()
        self.in_flight: list[str] = []
        self.stopping = False

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(self.threads)
        return env

    def run(self, run: PlannedRun) -> RunOutcome:
        with self.lock:
            self.in_flight.append(run.name)
        started = time.perf_counter()
        try:
            outcome = self._run(run)
        finally:
            with self.lock:
                self.in_flight.remove(run.name)
        outcome.seconds = time.perf_counter() - started
        return outcome

    def _run(self, run: PlannedRun) -> RunOutcome:
        folder = run.run_dir
        # A folder holding only compare's error.json is a run that never started: start it afresh.
        (folder / "error.json").unlink(missing_ok=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        log = self.out / "logs" / f"{run.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        attempts = [["--resume"], ["--overwrite"]] if folder.exists() else [[]]
        outcome = RunOutcome(run, "failed")
        for extra in attempts:
            command = run.command(self.threads, extra)
            outcome.attempts.append(" ".join(extra) or "fresh")
            code, stderr = self._launch(command, log)
            outcome.exit_code = code
            # Exit 2 on --resume means the run refused to resume (no checkpoint, changed config).
            if code == 2 and extra == ["--resume"] and not self.stopping:
                continue
            break
        if code == 0 and (folder / "final.json").exists():
            outcome.status = "done"
            return outcome
        if code == 0:
            stderr += "\nthe run exited 0 but wrote no final.json"
        outcome.error = _error_line(stderr) or f"exit code {code}"
        _write_error(run, outcome, command, stderr)
        return outcome

    def _launch(self, command: list[str], log: Path) -> tuple[int, str]:
        with log.open("a") as handle:
            handle.write("$ " + " ".join(command) + "\n")
            handle.flush()
            with self.lock:
                if self.stopping:
                    return 130, "stopped before it started"
                process = subprocess.Popen(command, stdout=handle, stderr=subprocess.PIPE, text=True, env=self.env())
                self.processes.add(process)
            try:
                _, stderr = process.communicate()
            finally:
                with self.lock:
                    self.processes.discard(process)
            handle.write(stderr)
        return process.returncode, stderr

    def stop(self) -> None:
        """Interrupt every run in flight; each keeps its checkpoint, so the next call resumes it."""
        with self.lock:
            self.stopping = True
            for process in self.processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGINT)


def _error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line
    return lines[-1] if lines else ""


def _write_error(run: PlannedRun, outcome: RunOutcome, command: list[str], stderr: str) -> None:
    from ssl_toolkit.results import atomic_write_json

    run.run_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {}
    existing = run.run_dir / "error.json"
    if existing.exists():
        # The run may have written its own error.json; keep its fields, add ours.
        try:
            record = json.loads(existing.read_text())
        except ValueError:
            record = {}
    record.setdefault("error", outcome.error)
    record.update(
        {
            "exit_code": outcome.exit_code,
            "stderr_tail": stderr[-STDERR_TAIL_CHARS:],
            "command": command,
            "algo": run.algo,
            "dataset": run.dataset,
            "labels": run.labels,
            "seed": run.seed,
            "setting": dict(run.setting),
            "config": run.expected_config,
        }
    )
    atomic_write_json(existing, record)


def _progress(console: Any, launcher: _Launcher) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class RunProgress(Progress):
        def get_renderables(self) -> Iterator[Any]:
            yield self.make_tasks_table(self.tasks)
            with launcher.lock:
                names = list(launcher.in_flight)
            if names:
                yield Text("running: " + ", ".join(names), style="dim")

    return RunProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def execute(runs: Sequence[PlannedRun], jobs: int, out: Path, console: Any = None) -> list[RunOutcome]:
    """Run what is not finished yet, ``jobs`` at a time; returns one outcome per planned run, in order."""
    from rich.console import Console

    console = console or Console(file=sys.stderr)
    launcher = _Launcher(out, threads_per_job(jobs))
    outcomes: dict[str, RunOutcome] = {}
    todo = []
    for run in runs:
        if (run.run_dir / "final.json").exists():
            outcomes[run.name] = RunOutcome(run, "reused")
        else:
            todo.append(run)
    console.print(
        f"{len(runs)} runs: {len(runs) - len(todo)} finished already (reused), {len(todo)} to run, "
        f"{jobs} at a time with {launcher.threads} thread(s) each",
        highlight=False,
    )
    with _progress(console, launcher) as progress:
        task = progress.add_task("runs", total=len(runs), completed=len(runs) - len(todo))
        executor = ThreadPoolExecutor(max_workers=jobs)
        pending: set[Future] = {executor.submit(launcher.run, run) for run in todo}
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    outcome = future.result()
                    outcomes[outcome.run.name] = outcome
                    progress.advance(task)
                    if outcome.status == "done":
                        message = f"done    {outcome.run.name} ({outcome.seconds:.1f} s)"
                        progress.console.print(message, highlight=False, soft_wrap=True)
                    else:
                        message = f"failed  {outcome.run.name} (exit {outcome.exit_code}): {outcome.error}"
                        progress.console.print(message, style="red", highlight=False, markup=False, soft_wrap=True)
                progress.refresh()
        except KeyboardInterrupt:
            launcher.stop()
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        executor.shutdown(wait=True)
    return [outcomes[run.name] for run in runs]


def run_all(runs: list[PlannedRun], jobs: int, out: Path) -> int:
    """Check, execute, report; exit code 1 when any run failed."""
    from rich.console import Console

    from ssl_toolkit.report import build_report

    if jobs < 1:
        raise UserInputError(f"--jobs {jobs} must be a positive integer")
    resolve_planned(runs)
    check_reusable(runs)
    out.mkdir(parents=True, exist_ok=True)
    try:
        outcomes = execute(runs, jobs, out)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume the unfinished runs", file=sys.stderr)
        return 130
    report = build_report(out)
    report.print()
    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    console = Console(file=sys.stderr)
    reused = sum(outcome.status == "reused" for outcome in outcomes)
    console.print(
        f"{len(outcomes)} runs: {reused} reused, {len(outcomes) - reused - len(failed)} run now, {len(failed)} failed",
        highlight=False,
    )
    for outcome in failed:
        console.print(f"failed: {outcome.run.name}: {outcome.error}", highlight=False, markup=False, soft_wrap=True)
    return 1 if failed else 0


def _run_parser(prog: str, description: str) -> _Parser:
    # compare and sweep both pass every flag they do not know on to the runs they start.
    return _Parser(
        prog=prog,
        allow_abbrev=False,
        description=f"{description} Any other flag is passed to every `ssl-bench run`.",
    )


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="data set name (ssl-bench list datasets)")
    parser.add_argument("--seeds", default="0", help="comma list of seeds (default: 0)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (default: 1)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the run folders and the report")


def _with_errors(body: Any) -> int:
    try:
        return body()
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """``ssl-bench compare --algos a,b --dataset D --labels 100,1000 --seeds 0,1,2 [--jobs N] --out DIR``.

    Any other flag is passed to every run. Returns the exit code: 0, 1 when a run failed, 2 on bad input.
    """
    parser = _run_parser(
        "ssl-bench compare",
        "Run every algorithm x label count x seed with identical splits and flags, then report.",
    )
    parser.add_argument("--algos", required=True, help="comma list of algorithms (ssl-bench list algorithms)")
    parser.add_argument("--labels", required=True, help="comma list of label counts")
    _common_arguments(parser)

    def body() -> int:
        args, run_flags = parser.parse_known_args(argv)
        check_run_flags(run_flags, RESERVED_RUN_FLAGS)
        algos = parse_algorithms("--algos", args.algos)
        labels = parse_ints("--labels", args.labels, 1)
        seeds = parse_ints("--seeds", args.seeds, 0)
        out = args.out or Path("runs") / f"compare-{args.dataset}"
        return run_all(plan_compare(algos, args.dataset, labels, seeds, out, run_flags), args.jobs, out)

    return _with_errors(body)


def sweep_main(argv: list[str] | None = None) -> int:
    """``ssl-bench sweep --algo A --dataset D --labels 50 --grid KEY=v1,v2 ... --seeds 0,1 --out DIR``.

    Other flags and the exit code as for :func:`main`.
    """
    parser = _run_parser(
        "ssl-bench sweep",
        "Run a grid of hyperparameters (or labels, backbone) x seeds for one algorithm, then report.",
    )
    parser.add_argument("--algo", required=True, help="algorithm (ssl-bench list algorithms)")
    parser.add_argument("--labels", default=None, help="comma list of label counts (or --grid labels=...)")
    parser.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY=v1,v2",
        help="values to sweep, repeatable: a hyperparameter of the algorithm, labels or backbone",
    )
    _common_arguments(parser)

    def body() -> int:
        args, run_flags = parser.parse_known_args(argv)
        check_run_flags(run_flags, {**RESERVED_RUN_FLAGS, "--algo": "--algo (one algorithm per sweep)"})
        (algo,) = parse_algorithms("--algo", args.algo)
        grid = parse_grid(args.grid, algo)
        keys = {key for key, _ in grid}
        if "labels" in keys and args.labels is not None:
            raise UserInputError("give label counts with --labels or with --grid labels=..., not both")
        if "labels" not in keys and args.labels is None:
            raise UserInputError("sweep needs --labels N[,N...] or --grid labels=N,N...")
        if "backbone" in keys and any(_flag_name(t) == "--backbone" for t in run_flags):
            raise UserInputError("--backbone is swept by --grid backbone=...; drop the --backbone flag")
        clash = sorted(_set_keys(run_flags) & keys)
        if clash:
            raise UserInputError(f"--set {clash[0]}=... clashes with --grid {clash[0]}=...; keep one of them")
        labels = parse_ints("--labels", args.labels, 1) if args.labels is not None else []
        seeds = parse_ints("--seeds", args.seeds, 0)
        out = args.out or Path("runs") / f"sweep-{args.dataset}-{algo}"
        return run_all(plan_sweep(algo, args.dataset, labels, grid, seeds, out, run_flags), args.jobs, out)

    return _with_errors(body)
