"""A rich progress bar (step, losses, ETA) around Trainer.run."""

from __future__ import annotations

import sys
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ssl_toolkit.trainer import Trainer


def run_with_progress(
    trainer: Trainer, quiet: bool = False, should_stop: Callable[[], bool] | None = None
) -> dict:
    """Run ``trainer`` showing a progress bar on stderr (none when ``quiet`` or not a terminal)."""
    console = Console(file=sys.stderr)
    if quiet or not console.is_terminal:
        return trainer.run(should_stop=should_stop)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[losses]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    config = trainer.config
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"{config.algo}", total=config.steps, completed=trainer.step, losses="")

        def update(step: int, values: dict[str, float]) -> None:
            losses = f"class {values['class_loss']:.3f} cons {values['consistency_loss']:.4f} w {values['weight']:.2f}"
            progress.update(task, completed=step, losses=losses)

        return trainer.run(progress=update, should_stop=should_stop)
