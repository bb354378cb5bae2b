"""Progress while a run trains: a rich bar on a terminal, one plain line per evaluation otherwise.

Both show the latest validation and test error of every evaluated model; ``--quiet`` silences both.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ssl_toolkit.observers import RunObserver


def run_header(trainer: Any) -> str:
    """What a run is about to do, with the execution settings it chose: the line every run starts with."""
    config = trainer.config
    start = f"steps {trainer.step + 1}..{config.steps}" if trainer.step else f"{config.steps} steps"
    world = trainer.ranks.world_size
    processes = f"{world} processes (torchrun) x " if world > 1 else ""
    header = (f"{config.algo} on {config.dataset}, {config.labels} labels, seed {config.seed}: {start} on "
              f"{trainer.device.type}, {processes}{config.threads or 1} thread(s) (--threads), {config.backbone}, "
              f"precision {config.precision}")
    estimate = trainer.estimated_seconds()
    if estimate > 60:
        # Said before a long run starts, while there is still time to choose a smaller budget.
        header += f"; about {_clock(estimate)} (estimated from one forward pass)"
    return header


def _errors(row: dict[str, Any]) -> str:
    """``student val 12.0 test 11.5, teacher val ...`` from a metrics row."""
    parts = []
    for model, test in row["test_error"].items():
        val = (row.get("val_error") or {}).get(model)
        parts.append(f"{model} " + (f"val {val:.2f} " if val is not None else "") + f"test {test:.2f}")
    return ", ".join(parts)


class ProgressBar(RunObserver):
    """A rich progress bar on stderr: step, losses, the latest errors, elapsed and remaining time."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task: Any = None
        self.latest = ""

    def on_start(self, trainer: Any) -> None:
        columns = (
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[losses]}"), TextColumn("{task.fields[errors]}"),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )
        self.console.print(run_header(trainer), highlight=False)
        self.progress = Progress(*columns, console=self.console)
        self.progress.start()
        self.task = self.progress.add_task(trainer.config.algo, total=trainer.config.steps, completed=trainer.step,
                                           losses="", errors="")

    def on_step(self, steps_done: int, values: dict[str, float]) -> None:
        losses = f"class {values['class_loss']:.3f} cons {values['consistency_loss']:.4f} w {values['weight']:.2f}"
        self.progress.update(self.task, completed=steps_done, losses=losses, errors=self.latest)

    def on_evaluation(self, row: dict[str, Any]) -> None:
        self.latest = _errors(row)

    def on_end(self) -> None:
        if self.progress is not None:
            self.progress.stop()


class PlainLines(RunObserver):
    """One plain line per evaluation, for logs, pipes and cluster jobs: step, losses, errors, elapsed, ETA."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def on_start(self, trainer: Any) -> None:
        self.total = trainer.config.steps
        self.first_step = trainer.step
        self.started = time.monotonic()
        print(run_header(trainer), file=self.stream, flush=True)

    def on_evaluation(self, row: dict[str, Any]) -> None:
        elapsed = time.monotonic() - self.started
        done = row["step"] - self.first_step
        eta = elapsed / done * (self.total - row["step"]) if done > 0 else 0.0
        print(
            f"step {row['step']}/{self.total}  class {row['class_loss']:.4f}  cons {row['consistency_loss']:.4f}  "
            f"{_errors(row)}  elapsed {_clock(elapsed)}  eta {_clock(eta)}",
            file=self.stream, flush=True,
        )


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def progress_observers(quiet: bool) -> list[RunObserver]:
    """What shows progress: a bar on a terminal, plain lines on stdout otherwise, nothing when quiet."""
    if quiet:
        return []
    console = Console(file=sys.stderr)
    if console.is_terminal:
        return [ProgressBar(console)]
    return [PlainLines(sys.stdout)]
