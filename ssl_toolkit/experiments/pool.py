"""The local process pool: each planned run is ``python -m ssl_toolkit run --config PLAN`` in its own process.

Finished runs are reused, interrupted ones resumed, failed ones recorded in their error.json.
Ctrl-C interrupts every run in flight; each keeps its checkpoint, so the next call resumes it.
"""

from __future__ import annotations

import os
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

from ssl_toolkit.experiments.plan import PlannedRun
from ssl_toolkit.results import atomic_write_json, write_error

STDERR_TAIL_CHARS = 4000


@dataclass
class RunOutcome:
    """What happened to one planned run: ``reused``, ``done`` or ``failed`` (with its error)."""

    run: PlannedRun
    status: str
    exit_code: int | None = None
    error: str | None = None
    seconds: float = 0.0
    attempts: list[str] = field(default_factory=list)


def run_command(run: PlannedRun, root: Path, extra: Sequence[str] = ()) -> list[str]:
    """The command line that trains ``run`` from its plan file (written by :func:`write_plan`)."""
    return [sys.executable, "-m", "ssl_toolkit", "run", "--config", str(run.plan_file(root)), *extra]


def write_plan(runs: Sequence[PlannedRun], root: Path) -> None:
    """Write every run's resolved config where :func:`run_command` points."""
    for run in runs:
        atomic_write_json(run.plan_file(root), run.config.to_json())


class _Launcher:
    """Runs planned runs as subprocesses, recording failures and tracking what is in flight."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.processes: set[subprocess.Popen] = set()
        self.in_flight: list[str] = []
        self.stopping = False

    def env(self, run: PlannedRun) -> dict[str, str]:
        env = dict(os.environ)
        # Native thread pools (OpenMP, MKL) start before torch reads --threads; give them the same count.
        threads = str(run.config.threads or 1)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = threads
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
        # A folder holding only the pool's error.json is a run that never started: start it afresh.
        if folder.is_dir() and [p.name for p in folder.iterdir()] == ["error.json"]:
            (folder / "error.json").unlink()
            folder.rmdir()
        log = self.root / "logs" / f"{run.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        attempts = [["--resume"], ["--overwrite"]] if folder.exists() else [[]]
        outcome = RunOutcome(run, "failed")
        for extra in attempts:
            command = run_command(run, self.root, extra)
            outcome.attempts.append(" ".join(extra) or "fresh")
            code, stderr = self._launch(command, log, run)
            outcome.exit_code = code
            # Exit 2 on --resume means the run refused to resume (no checkpoint, changed config).
            if code == 2 and extra == ["--resume"] and not self.stopping:
                continue
            break
        if code == 0 and run.finished:
            outcome.status = "done"
            return outcome
        if code == 0:
            stderr += "\nthe run exited 0 but wrote no final.json"
        outcome.error = _error_line(stderr) or f"exit code {code}"
        folder.mkdir(parents=True, exist_ok=True)
        write_error(
            folder / "error.json",
            {"exit_code": code, "stderr_tail": stderr[-STDERR_TAIL_CHARS:], "command": command,
             "setting": run.setting, "config": run.config.to_json()},
            defaults={"error": outcome.error},
        )
        return outcome

    def _launch(self, command: list[str], log: Path, run: PlannedRun) -> tuple[int, str]:
        with log.open("a") as handle:
            handle.write("$ " + " ".join(command) + "\n")
            handle.flush()
            with self.lock:
                if self.stopping:
                    return 130, "stopped before it started"
                process = subprocess.Popen(command, stdout=handle, stderr=subprocess.PIPE, text=True,
                                           env=self.env(run))
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

    return RunProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), console=console)


def execute(runs: Sequence[PlannedRun], jobs: int, root: Path, console: Any = None) -> list[RunOutcome]:
    """Run what is not finished yet, ``jobs`` at a time; returns one outcome per planned run, in order."""
    from rich.console import Console

    console = console or Console(file=sys.stderr)
    launcher = _Launcher(root)
    outcomes: dict[str, RunOutcome] = {}
    todo = []
    for run in runs:
        if run.finished:
            outcomes[run.name] = RunOutcome(run, "reused")
        else:
            todo.append(run)
    write_plan(todo, root)
    threads = sorted({run.config.threads or 1 for run in todo}) or [1]
    console.print(
        f"{len(runs)} runs: {len(runs) - len(todo)} finished already (reused), {len(todo)} to run, "
        f"{jobs} at a time with {'/'.join(map(str, threads))} thread(s) each",
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
