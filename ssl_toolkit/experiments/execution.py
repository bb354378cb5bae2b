"""Executing a plan, whoever runs it: the local pool, Ray, or (``--plan``) a scheduler given the command lines.

:func:`execute` is the one entry point for running planned runs (compare, sweep, tune): it reuses
finished runs, writes the plan files, hands the rest to a backend and shows progress. A backend is
anything with ``outcomes(runs, root)`` yielding a :class:`RunOutcome` per run as it ends, and
``in_flight()`` naming the runs under way; both backends execute a run through
:func:`ssl_toolkit.experiments.launch.launch_run`'s launcher.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from ssl_toolkit.errors import UserInputError
from ssl_toolkit.experiments.launch import ALL_GPUS, RunOutcome, planned_line, write_plan
from ssl_toolkit.experiments.plan import PlannedRun, check_reusable

BACKENDS = ("local", "ray")


class Backend(Protocol):
    """Executes planned runs whose plan files are written."""

    in_flight_label: str

    def outcomes(self, runs: Sequence[PlannedRun], root: Path) -> Iterator[RunOutcome]: ...

    def in_flight(self) -> list[str]: ...


@dataclass
class Execution:
    """How a plan is executed: ``jobs`` at a time, on ``gpus``, by ``backend``; or only printed (``plan``).

    ``jobs`` None means one per GPU (one without GPUs) for the local pool, and no cap for Ray.
    ``gpus`` ``["all"]`` means every visible GPU (for Ray: whichever GPU Ray assigns).
    """

    jobs: int | None = None
    gpus: list[str] = field(default_factory=list)
    backend: str = "local"
    plan: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UserInputError(f"--backend {self.backend!r} is not a backend; valid: {', '.join(BACKENDS)}")
        if self.jobs is not None and self.jobs < 1:
            raise UserInputError(f"--jobs {self.jobs} must be a positive integer")
        if self.plan:
            given = [flag for flag, value in (("--jobs", self.jobs), ("--gpus", self.gpus),
                                              ("--backend ray", self.backend == "ray")) if value]
            if given:
                raise UserInputError(f"--plan runs nothing, so {given[0]} has no effect: the scheduler that runs "
                                     f"the printed lines chooses how many at a time and on which devices")
        if self.gpus == [ALL_GPUS] and self.backend == "local":
            from ssl_toolkit.experiments.pool import visible_gpus

            self.gpus = visible_gpus()

    @property
    def slots(self) -> int | None:
        """Runs at a time: ``jobs``, else one per GPU for the local pool (one without GPUs), else no cap (Ray)."""
        if self.jobs is not None:
            return self.jobs
        if self.backend == "ray":
            return None
        return max(len(self.gpus), 1)

    def backend_runner(self) -> Backend:
        if self.backend == "ray":
            from ssl_toolkit.experiments.ray_backend import RayBackend

            return RayBackend(self.slots, self.gpus)
        from ssl_toolkit.experiments.pool import LocalPool

        return LocalPool(self.slots, self.gpus)

    def describe(self, threads: Sequence[int]) -> str:
        at_once = "all at once" if self.slots is None else f"{self.slots} at a time"
        text = f"{at_once} with {'/'.join(map(str, threads))} thread(s) each"
        if self.backend == "ray":
            text = f"as Ray tasks, {text}" + (", one GPU each" if self.gpus else "")
        elif self.gpus:
            shared = " (round-robin: some GPUs take two or more runs at once)" if self.slots > len(self.gpus) else ""
            text += f", one GPU per slot from {','.join(self.gpus)}{shared}"
        return text


def split_finished(runs: Sequence[PlannedRun]) -> tuple[list[PlannedRun], list[PlannedRun]]:
    """(finished runs, runs still to do), after checking that finished runs had the config requested now."""
    check_reusable(runs)
    return [run for run in runs if run.finished], [run for run in runs if not run.finished]


def print_plan(runs: Sequence[PlannedRun], root: Path, stream: TextIO | None = None) -> list[str]:
    """Write the plan files of the unfinished runs and print one runnable shell line per run; returns the lines."""
    finished, todo = split_finished(runs)
    write_plan(todo, root)
    lines = [planned_line(run, root) for run in todo]
    stream = stream or sys.stdout
    for line in lines:
        print(line, file=stream)
    stream.flush()
    print(f"{len(runs)} runs: {len(finished)} finished already (not printed), {len(todo)} printed; when they are "
          f"done, `ssl-bench report {root.absolute()}` collects them", file=sys.stderr)
    return lines


def execute(runs: Sequence[PlannedRun], root: Path, execution: Execution, console: Any = None) -> list[RunOutcome]:
    """Run what is not finished yet; returns one outcome per planned run, in order.

    Checks every run before the first starts (a finished run must have the config requested now,
    and the backend must be available), so bad input is refused before anything runs.
    """
    from rich.console import Console

    finished, todo = split_finished(runs)
    backend = execution.backend_runner()
    console = console or Console(file=sys.stderr)
    outcomes = {run.name: RunOutcome(run, "reused") for run in finished}
    root.mkdir(parents=True, exist_ok=True)
    write_plan(todo, root)
    threads = sorted({run.config.threads or 1 for run in todo}) or [1]
    console.print(f"{len(runs)} runs: {len(finished)} finished already (reused), {len(todo)} to run, "
                  f"{execution.describe(threads)}", highlight=False, soft_wrap=True)
    with _progress(console, backend) as progress:
        task = progress.add_task("runs", total=len(runs), completed=len(finished))
        with closing(backend.outcomes(todo, root)) as ended:
            for outcome in ended:
                outcomes[outcome.run.name] = outcome
                progress.advance(task)
                if outcome.status == "done":
                    progress.console.print(f"done    {outcome.run.name} ({outcome.seconds:.1f} s)", highlight=False,
                                           soft_wrap=True)
                else:
                    message = f"failed  {outcome.run.name} (exit {outcome.exit_code}): {outcome.error}"
                    progress.console.print(message, style="red", highlight=False, markup=False, soft_wrap=True)
    return [outcomes[run.name] for run in runs]


def _progress(console: Any, backend: Backend) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class RunProgress(Progress):
        def get_renderables(self) -> Iterator[Any]:
            yield self.make_tasks_table(self.tasks)
            names = backend.in_flight()
            if names:
                yield Text(f"{backend.in_flight_label}: " + ", ".join(names), style="dim")

    return RunProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), console=console)
