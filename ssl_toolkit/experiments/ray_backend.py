"""The Ray backend: every planned run is a Ray task that executes the same ``ssl-bench run`` process as the pool.

The task is :func:`ssl_toolkit.experiments.launch.launch_run`, so the command, thread environment,
resume rule, log and error record are the pool's. A run asks Ray for ``threads`` CPUs, and for one
GPU when GPUs are requested; Ray picks the node and the GPU and sets ``CUDA_VISIBLE_DEVICES`` for the
task, which the run's process inherits. Ray connects to the cluster named by ``RAY_ADDRESS`` (or one
``ray.init`` already joined); otherwise it starts a local Ray that later calls in the same process
reuse (a tuning's rounds) and that Ray shuts down when the process exits.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ssl_toolkit.errors import UserInputError
from ssl_toolkit.experiments.launch import (
    ALL_GPUS,
    GPU_VARIABLE,
    RunOutcome,
    launch_run,
    portable_config,
    record_failure,
    run_command,
)
from ssl_toolkit.experiments.plan import PlannedRun

INSTALL_HINT = "pip install 'ssl-toolkit[ray]'"
# How long an interrupted run may take to write its checkpoint before the local Ray is shut down.
STOP_GRACE_SECONDS = 120
# The GPUs of the local Ray this process started (None: it started none).
_local_ray_gpus: list[str] | None = None


def require_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserInputError(f"--backend ray needs Ray, an optional extra: {INSTALL_HINT}") from None
    return ray


class RayBackend:
    """Submits planned runs as Ray tasks, at most ``jobs`` at once (None: all, and Ray's resources decide)."""

    in_flight_label = "submitted to Ray"

    def __init__(self, jobs: int | None = None, gpus: Sequence[str] = ()) -> None:
        self.ray = require_ray()
        self.jobs = jobs
        self.gpus = list(gpus)
        if self.gpus and self.gpus != [ALL_GPUS] and self._joins_a_cluster():
            raise UserInputError(f"--gpus {','.join(self.gpus)}: a running Ray cluster assigns its own GPUs to the "
                                 f"runs; give --gpus all")
        self.submitted: dict[Any, PlannedRun] = {}
        # Read by the progress display's thread: replaced whole, never changed in place.
        self._in_flight: tuple[str, ...] = ()

    def in_flight(self) -> list[str]:
        return list(self._in_flight)

    def _joins_a_cluster(self) -> bool:
        started_here = self.ray.is_initialized() and _local_ray_gpus is not None
        return bool(os.environ.get("RAY_ADDRESS")) or (self.ray.is_initialized() and not started_here)

    def _start(self) -> None:
        """Join the running Ray (or ``RAY_ADDRESS``'s cluster), else start a local one."""
        global _local_ray_gpus
        if self.ray.is_initialized():
            return
        if os.environ.get("RAY_ADDRESS"):
            self.ray.init(logging_level=logging.WARNING)
            return
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        _local_ray_gpus = list(self.gpus)
        if self.gpus in ([], [ALL_GPUS]):
            # Ray finds this machine's GPUs itself (those in CUDA_VISIBLE_DEVICES, if set).
            self.ray.init(**options)
            return
        # A local Ray uses the GPUs listed in CUDA_VISIBLE_DEVICES when it starts, and no others.
        saved = os.environ.get(GPU_VARIABLE)
        os.environ[GPU_VARIABLE] = ",".join(self.gpus)
        try:
            self.ray.init(num_gpus=len(self.gpus), **options)
        finally:
            if saved is None:
                os.environ.pop(GPU_VARIABLE)
            else:
                os.environ[GPU_VARIABLE] = saved

    def _outcome(self, ref: Any, run: PlannedRun, root: Path) -> RunOutcome:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as error:
            # The task itself died (its worker crashed, or ssl_toolkit is missing on that node).
            outcome = RunOutcome(run, "failed")
            record_failure(outcome, f"error: the Ray task died: {error}", run_command(run, root))
            return outcome

    def outcomes(self, runs: Sequence[PlannedRun], root: Path) -> Iterator[RunOutcome]:
        """Run ``runs`` (plan files already written) as Ray tasks; yield each outcome as its run ends."""
        ray = self.ray
        self._start()
        task = ray.remote(launch_run)
        # Absolute paths: a worker's current folder is not the one the command was typed in.
        root = root.absolute()
        waiting = [dataclasses.replace(run, config=portable_config(run.config)) for run in runs]
        waiting.reverse()
        try:
            while waiting or self.submitted:
                while waiting and (self.jobs is None or len(self.submitted) < self.jobs):
                    run = waiting.pop()
                    options = {"num_cpus": run.config.threads or 1, "num_gpus": 1 if self.gpus else 0}
                    self.submitted[task.options(**options).remote(run, root)] = run
                self._in_flight = tuple(submitted.name for submitted in self.submitted.values())
                # A timeout keeps the driver responsive to Ctrl-C.
                done, _ = ray.wait(list(self.submitted), num_returns=1, timeout=0.5)
                for ref in done:
                    run = self.submitted.pop(ref)
                    self._in_flight = tuple(submitted.name for submitted in self.submitted.values())
                    yield self._outcome(ref, run, root)
        except BaseException:
            # A cancelled task interrupts its run, which writes its checkpoint before the task ends.
            refs = list(self.submitted)
            for ref in refs:
                ray.cancel(ref)
            ray.wait(refs, num_returns=len(refs), timeout=STOP_GRACE_SECONDS)
            self.submitted.clear()
            self._in_flight = ()
            raise
