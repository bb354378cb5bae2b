"""The local process pool: ``jobs`` runs at a time on this machine, each in its own process.

Each of the ``jobs`` slots is a place a run executes; with ``gpus`` slot i sees only the GPU
``gpus[i % len(gpus)]`` (through ``CUDA_VISIBLE_DEVICES``), so with at most one slot per GPU no two
runs in flight share a GPU. Ctrl-C interrupts every run in flight; each keeps its checkpoint, so the
next call resumes it.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from ssl_toolkit.errors import UserInputError
from ssl_toolkit.experiments.launch import GPU_VARIABLE, RunLauncher, RunOutcome
from ssl_toolkit.experiments.plan import PlannedRun


def visible_gpus() -> list[str]:
    """The GPUs this process may use: the entries of CUDA_VISIBLE_DEVICES when it is set, else every GPU."""
    listed = os.environ.get(GPU_VARIABLE)
    if listed is not None:
        gpus = [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    else:
        import torch

        gpus = [str(index) for index in range(torch.cuda.device_count())]
    if not gpus:
        raise UserInputError("--gpus all: no GPU is visible here; give the GPU ids (e.g. --gpus 0,1), or leave "
                             "--gpus out to run on the CPU")
    return gpus


def slot_devices(jobs: int, gpus: Sequence[str]) -> list[str | None]:
    """The GPU each job slot sees: round-robin over ``gpus`` (None for every slot without GPUs).

    >>> slot_devices(4, ["0", "1"])
    ['0', '1', '0', '1']
    """
    return [gpus[slot % len(gpus)] if gpus else None for slot in range(jobs)]


class LocalPool:
    """Runs planned runs ``jobs`` at a time as local subprocesses, one GPU per slot when ``gpus`` are given."""

    in_flight_label = "running"

    def __init__(self, jobs: int, gpus: Sequence[str] = ()) -> None:
        self.jobs = jobs
        self.devices = slot_devices(jobs, gpus)
        self.free_slots: queue.SimpleQueue[int] = queue.SimpleQueue()
        for slot in range(jobs):
            self.free_slots.put(slot)
        self.launcher: RunLauncher | None = None

    def in_flight(self) -> list[str]:
        if self.launcher is None:
            return []
        with self.launcher.lock:
            return list(self.launcher.in_flight)

    def _run_in_a_slot(self, run: PlannedRun) -> RunOutcome:
        # The executor never runs more than ``jobs`` at once, so a slot is always free here.
        slot = self.free_slots.get()
        try:
            device = self.devices[slot]
            return self.launcher.run(run, {GPU_VARIABLE: device} if device is not None else None)
        finally:
            self.free_slots.put(slot)

    def outcomes(self, runs: Sequence[PlannedRun], root: Path) -> Iterator[RunOutcome]:
        """Run ``runs`` (plan files already written); yield each outcome as its run ends."""
        self.launcher = RunLauncher(root)
        executor = ThreadPoolExecutor(max_workers=self.jobs)
        pending: set[Future] = {executor.submit(self._run_in_a_slot, run) for run in runs}
        try:
            while pending:
                # A timeout keeps the main thread responsive to Ctrl-C and to progress refreshes.
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        except BaseException:
            self.launcher.stop()
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        executor.shutdown(wait=True)
