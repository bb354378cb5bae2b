"""What watches a run while it trains: progress displays and loggers share one small interface.

The trainer calls every observer at the start, after each step (with that step's losses, weight
and lr, already on the host), after each evaluation (with the metrics.jsonl row) and at the end.
metrics.jsonl stays the source of truth; observers only show or forward what the trainer computed.
"""

from __future__ import annotations

from typing import Any


class RunObserver:
    """Base class of progress displays and loggers; every hook does nothing unless overridden.

    Example:
        >>> class PrintEvaluations(RunObserver):
        ...     def on_evaluation(self, row):
        ...         print(row["step"], row["val_error"])
        >>> trainer.run(observers=[PrintEvaluations()])
    """

    def on_start(self, trainer: Any) -> None:
        """The run starts (or resumes) at ``trainer.step``."""

    def on_step(self, steps_done: int, values: dict[str, float]) -> None:
        """Step ``steps_done`` (1-based) finished: its class/consistency loss, weight and lr."""

    def on_evaluation(self, row: dict[str, Any]) -> None:
        """An evaluation finished; ``row`` is the line just appended to metrics.jsonl."""

    def on_end(self) -> None:
        """The run finished, stopped or failed; flush and close."""
