"""One planned run as one ``ssl-bench run`` process: its plan file, command line, environment and outcome.

Every way of executing a plan goes through here: the local pool calls :func:`launch_run` from a
thread, the Ray backend from a Ray task, and ``--plan`` prints :func:`shell_line` for a scheduler to
run. So the command, the thread environment, the resume/overwrite choice and the error record are
the same whichever executes the run.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ssl_toolkit.config import RunConfig
from ssl_toolkit.experiments.plan import PlannedRun
from ssl_toolkit.results import RunFolder, atomic_write_json, write_error

STDERR_TAIL_CHARS = 4000
# Native thread pools (OpenMP, MKL, OpenBLAS) size themselves when the process starts, before torch
# reads the config's ``threads``; they get the same count through the environment.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
GPU_VARIABLE = "CUDA_VISIBLE_DEVICES"
# --gpus all: every GPU the machine shows (the local pool lists them; Ray assigns them itself).
ALL_GPUS = "all"
# How a launcher stops its runs. A run treats SIGTERM as Ctrl-C (step, checkpoint, exit), and unlike
# SIGINT it is never blocked: a Ray worker starts its children with SIGINT blocked.
STOP_SIGNAL = signal.SIGTERM


@dataclass
class RunOutcome:
    """What happened to one planned run: ``reused``, ``done`` or ``failed`` (with its error)."""

    run: PlannedRun
    status: str
    exit_code: int | None = None
    error: str | None = None
    seconds: float = 0.0
    attempts: list[str] = field(default_factory=list)


def portable_config(config: RunConfig) -> RunConfig:
    """``config`` with its paths made absolute, so its plan file runs from any folder of a shared file system."""
    from ssl_toolkit.data.sources import get_dataset_spec

    def absolute(path: str) -> str:
        return str(Path(path).expanduser().absolute())

    data_dir = config.data_dir
    if data_dir is None:
        # A relative default ("data", "data.npz") means the folder the command was typed in.
        default = get_dataset_spec(config.dataset).default_data_dir
        data_dir = absolute(default) if default and not Path(default).expanduser().is_absolute() else None
    else:
        data_dir = absolute(data_dir)
    plugins = [absolute(p) if p.endswith(".py") or Path(p).is_file() else p for p in config.plugins]
    return dataclasses.replace(config, out=absolute(config.out), data_dir=data_dir, plugins=plugins)


def write_plan(runs: Sequence[PlannedRun], root: Path) -> None:
    """Write every run's resolved config where :func:`run_command` points."""
    for run in runs:
        atomic_write_json(run.plan_file(root), portable_config(run.config).to_json())


def start_flags(run: PlannedRun) -> list[str]:
    """How an unfinished run starts: afresh, ``--resume`` from its checkpoint, or ``--overwrite`` of a folder
    that holds no checkpoint (a run that failed or was killed before its first checkpoint)."""
    folder = RunFolder(run.run_dir)
    if folder.checkpoint.exists():
        return ["--resume"]
    return ["--overwrite"] if folder.exists() else []


def run_command(run: PlannedRun, root: Path, extra: Sequence[str] = ()) -> list[str]:
    """The command line that trains ``run`` from its plan file (written by :func:`write_plan`)."""
    plan = run.plan_file(root).absolute()
    return [sys.executable, "-m", "ssl_toolkit", "run", "--config", str(plan), *extra]


def thread_env(config: RunConfig) -> dict[str, str]:
    """The thread-count variables a run's process starts with."""
    return dict.fromkeys(THREAD_VARIABLES, str(config.threads or 1))


def shell_line(command: Sequence[str], env: Mapping[str, str]) -> str:
    """``VAR=value ... command`` as one line that a POSIX shell runs as is."""
    return " ".join([*(f"{name}={shlex.quote(value)}" for name, value in env.items()), shlex.join(command)])


def planned_line(run: PlannedRun, root: Path) -> str:
    """What ``--plan`` prints for an unfinished run: its command with its thread environment."""
    return shell_line(run_command(run, root, start_flags(run)), thread_env(run.config))


class RunLauncher:
    """Runs planned runs as subprocesses, records failures, and interrupts them all on request.

    One launcher serves many threads (the local pool) or a single call (a Ray task).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.processes: set[subprocess.Popen] = set()
        self.in_flight: list[str] = []
        self.stopping = False

    def run(self, run: PlannedRun, env: Mapping[str, str] | None = None) -> RunOutcome:
        """Train ``run`` to its end in a subprocess whose environment adds ``env`` (e.g. its GPU)."""
        with self.lock:
            self.in_flight.append(run.name)
        started = time.perf_counter()
        try:
            outcome = self._run(run, {**thread_env(run.config), **(env or {})})
        finally:
            with self.lock:
                self.in_flight.remove(run.name)
        outcome.seconds = time.perf_counter() - started
        return outcome

    def _run(self, run: PlannedRun, env: dict[str, str]) -> RunOutcome:
        log = self.root / "logs" / f"{run.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        first = start_flags(run)
        # A resume that is refused (exit 2: the checkpoint does not fit the config) falls back to a fresh start.
        attempts = [first, ["--overwrite"]] if first == ["--resume"] else [first]
        outcome = RunOutcome(run, "failed")
        for extra in attempts:
            command = run_command(run, self.root, extra)
            outcome.attempts.append(" ".join(extra) or "fresh")
            code, stderr = self._launch(command, env, log)
            outcome.exit_code = code
            if code == 2 and extra == ["--resume"] and not self.stopping:
                continue
            break
        if code == 0 and run.finished:
            outcome.status = "done"
            return outcome
        if self.stopping:
            # Interrupted, not failed: the folder keeps its checkpoint and no error.json, for the next call.
            outcome.error = "interrupted"
            return outcome
        if code == 0:
            stderr += "\nthe run exited 0 but wrote no final.json"
        record_failure(outcome, stderr, command)
        return outcome

    def _launch(self, command: list[str], env: dict[str, str], log: Path) -> tuple[int, str]:
        # The log names the GPU the run sees, whoever chose it (the pool's slot or Ray).
        shown = {**env, **({GPU_VARIABLE: os.environ[GPU_VARIABLE]}
                           if GPU_VARIABLE in os.environ and GPU_VARIABLE not in env else {})}
        with log.open("a") as handle:
            handle.write("$ " + shell_line(command, shown) + "\n")
            handle.flush()
            with self.lock:
                if self.stopping:
                    return 130, "stopped before it started"
                # A session of its own: the terminal's Ctrl-C reaches only this process, which stops each
                # run once; a second signal would make a run stop at once, without its checkpoint.
                process = subprocess.Popen(command, stdout=handle, stderr=subprocess.PIPE, text=True,
                                           env={**os.environ, **env}, start_new_session=True)
                self.processes.add(process)
            stderr = ""
            try:
                stderr = _communicate(process)
            except KeyboardInterrupt:
                # A cancelled Ray task: let the run write its checkpoint before the task ends.
                self.stop()
                stderr = _communicate(process, interruptible=False)
                raise
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
                    process.send_signal(STOP_SIGNAL)


def launch_run(run: PlannedRun, root: Path, env: Mapping[str, str] | None = None) -> RunOutcome:
    """Train one planned run in a subprocess and return its outcome (what a Ray task executes)."""
    return RunLauncher(root).run(run, env)


def record_failure(outcome: RunOutcome, stderr: str, command: Sequence[str]) -> None:
    """Mark ``outcome`` failed and record why in its run folder's error.json (beside what the run wrote there)."""
    run = outcome.run
    outcome.status = "failed"
    outcome.error = _error_line(stderr) or f"exit code {outcome.exit_code}"
    run.run_dir.mkdir(parents=True, exist_ok=True)
    write_error(
        run.run_dir / "error.json",
        {"exit_code": outcome.exit_code, "stderr_tail": stderr[-STDERR_TAIL_CHARS:], "command": list(command),
         "setting": run.setting, "config": run.config.to_json()},
        defaults={"error": outcome.error},
    )


def _communicate(process: subprocess.Popen, interruptible: bool = True) -> str:
    """The process's stderr once it has ended; ``interruptible=False`` waits through further Ctrl-Cs.

    Waits in short slices: Ray cancels a task by raising KeyboardInterrupt in its thread, which
    only lands between slices, not inside one blocking wait.
    """
    while True:
        try:
            return process.communicate(timeout=0.5)[1]
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt:
            if interruptible:
                raise


def _error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line
    return lines[-1] if lines else ""
