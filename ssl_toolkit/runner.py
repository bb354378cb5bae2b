"""One run from a resolved config to its finished folder: folder checks, training, stop and failure.

The command line (``ssl-bench run``, ``ssl-bench resume``) and Python callers use the same two
functions, :func:`execute_run` and :func:`resume_run`; neither prints. Every check that can fail
runs before anything is written or removed. Under torchrun every process calls them: all of them
check, train and stop together, and only rank 0 writes the run folder and shows progress.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssl_toolkit.config import RESUMABLE_KEYS, RunConfig, differences, read_config_file, resolve_run_config
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.loggers import build_loggers, check_loggers, remove_logs
from ssl_toolkit.results import RunFolder, write_error

if TYPE_CHECKING:
    from ssl_toolkit.distributed import Ranks

RUN_FILES = ("config.json", "split.json", "metrics.jsonl", "checkpoint.pt", "final.json", "error.json")


@dataclass
class RunResult:
    """How a run ended: ``complete``, ``already_complete``, ``stopped`` (by a signal) or ``diverged``.

    ``final`` is final.json's content for a complete run; ``message`` says what happened for the
    others; ``exit_code`` is what the command line returns (0, 1 for divergence, 128 + signal).
    ``rank`` is the process's rank under torchrun (0 otherwise): every rank gets the same outcome,
    and only rank 0 reports it.
    """

    status: str
    config: RunConfig
    final: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    exit_code: int = 0
    rank: int = 0


def check_folder(config: RunConfig, *, resume: bool, overwrite: bool) -> bool:
    """Refuse what would destroy or mix up a run; True when ``overwrite`` must clear the folder.

    Only reads: nothing is removed until the data, model and checkpoint have been checked too.
    """
    folder = RunFolder(config.out)
    if folder.path.exists() and not folder.path.is_dir():
        raise UserInputError(f"--out {folder.path} is a file, not a folder; choose another --out")
    if resume and overwrite:
        raise UserInputError("--resume and --overwrite exclude each other: continue the run, or replace it")
    if resume:
        if not folder.config.exists():
            raise UserInputError(f"--resume: {folder.path} holds no run (no config.json); start it without --resume")
        found = differences(read_config_file(folder.config), config, ignore=RESUMABLE_KEYS)
        if found:
            raise UserInputError(
                f"--resume: the config differs from the saved run in {', '.join(d.key for d in found)}; "
                f"use the same flags, or start a new run with another --out"
            )
        if not folder.checkpoint.exists():
            raise UserInputError(f"--resume: no checkpoint in {folder.path}; rerun with --overwrite")
        return False
    if folder.exists():
        if not overwrite:
            raise UserInputError(
                f"run folder {folder.path} already exists; add --resume to continue it, "
                f"--overwrite to replace it, or choose another --out"
            )
        if not (folder.config.exists() or folder.error.exists()):
            raise UserInputError(
                f"--overwrite: {folder.path} is not a run folder (no config.json); refusing to delete it"
            )
        return True
    return False


def clear_run_files(path: Path) -> None:
    """Remove the files a run writes (and temporary files of a killed one), nothing else: an
    ``--out`` that also holds the user's own files keeps them."""
    for name in RUN_FILES:
        (path / name).unlink(missing_ok=True)
    for stale in path.glob(".*.tmp"):
        stale.unlink()
    remove_logs(path)


def execute_run(config: RunConfig, *, resume: bool = False, overwrite: bool = False, quiet: bool = False) -> RunResult:
    """Train ``config`` into its run folder and say how it ended.

    ``resume`` continues the folder from its checkpoint; ``overwrite`` replaces a finished or failed
    run. SIGINT/SIGTERM stop the run after the current step with a checkpoint written. Under
    torchrun (see :mod:`ssl_toolkit.distributed`) every process calls this with the same config.
    """
    from ssl_toolkit.distributed import join

    ranks = join(config.device)
    try:
        return _execute(config, ranks, resume=resume, overwrite=overwrite, quiet=quiet)
    finally:
        ranks.leave()


def _execute(config: RunConfig, ranks: Ranks, *, resume: bool, overwrite: bool, quiet: bool) -> RunResult:
    from ssl_toolkit.progress import progress_observers
    from ssl_toolkit.signals import StopRequest
    from ssl_toolkit.trainer import DivergenceError, Trainer

    # The data, split, hyperparameter ranges, model and checkpoint are all checked here, so bad
    # input is refused before any file is written or removed; under torchrun every rank checks
    # and all of them stop if one of them refuses.
    failure = None
    try:
        clear = check_folder(config, resume=resume, overwrite=overwrite)
        check_loggers(config.loggers)
        trainer = Trainer(config, resume=resume, ranks=ranks)
    except UserInputError as error:
        failure = error
    ranks.raise_any(failure)
    folder = RunFolder(config.out)
    if resume and trainer.step >= config.steps and folder.final.exists():
        return RunResult("already_complete", config, json.loads(folder.final.read_text()),
                         f"the run in {folder.path} is already complete ({trainer.step} steps); "
                         f"add --steps N to extend it", rank=ranks.rank)
    trainer.check_before_training()
    if clear and ranks.is_main:
        clear_run_files(folder.path)
    stop = StopRequest()
    # Observers are built here only, so that only rank 0 shows progress and logs.
    observers = [*progress_observers(quiet), *build_loggers(config)] if ranks.is_main else []
    try:
        with stop.installed():
            final = trainer.run(observers, should_stop=stop)
    except DivergenceError as error:
        if ranks.is_main:
            write_error(folder.error, {"error": str(error), "step": error.step,
                                       "checkpoint_step": trainer.checkpoint_step})
        kept = [f"the checkpoint of step {trainer.checkpoint_step}"] if trainer.checkpoint_step else []
        kept += ["metrics.jsonl"] if folder.metrics.exists() else []
        message = (f"{error}; kept {' and '.join(kept) or 'config.json and split.json'} in {folder.path} "
                   f"(details in error.json)")
        return RunResult("diverged", config, message=message, exit_code=1, rank=ranks.rank)
    if not final:  # a signal ended the run early (one during the last step lets it complete)
        message = (f"stopped by {stop.name or 'a signal to another process'} after step {trainer.step} "
                   f"(checkpoint written); continue with: {resume_command(folder.path, ranks.world_size)}")
        # A rank that saw no signal itself ends as the signalled ones do.
        return RunResult("stopped", config, message=message, exit_code=stop.exit_code or 143, rank=ranks.rank)
    if ranks.is_main:
        folder.error.unlink(missing_ok=True)
    return RunResult("complete", config, final, rank=ranks.rank)


def resume_command(path: Path, world_size: int) -> str:
    """The command that continues the run in ``path``, with as many processes as it had."""
    if world_size == 1:
        return f"ssl-bench resume {path}"
    if os.environ.get("LOCAL_WORLD_SIZE") == str(world_size):
        return f"torchrun --nproc_per_node {world_size} -m ssl_toolkit resume {path}"
    return f"ssl-bench resume {path}, under torchrun with {world_size} processes in all"


def resolve_for_resume(values: dict[str, Any], out: str | Path) -> RunConfig:
    """The config of a resumed run: the saved config.json as the base layer, ``values`` on top.

    Values derived from the step budget (the lr ramps) keep their saved values when only ``steps``
    changes, and any value that does change the experiment shows up as a difference.
    """
    folder = RunFolder(out)
    if not folder.config.is_file():
        raise UserInputError(f"{folder.path} holds no run (no config.json)")
    steps = values.get("steps")
    if steps is not None and folder.checkpoint.is_file():
        from ssl_toolkit.checkpoint import load_checkpoint

        # The checkpoint's step is the actual limit: say so, before any setting derived from the old
        # budget (the lr ramps) could be named instead.
        state = load_checkpoint(folder.checkpoint)
        done = state.get("step") if isinstance(state, dict) else None
        if isinstance(done, int) and steps < done:
            raise UserInputError(f"--steps {steps}: the checkpoint in {folder.path} is already at step {done}; "
                                 f"valid: --steps {done} or more")
    try:
        return resolve_run_config({**values, "out": str(folder.path)}, folder.config)
    except UserInputError as error:
        if steps is None:
            raise
        raise UserInputError(f"--steps {steps} does not fit the saved run ({error}); the other settings come "
                             f"from {folder.config}") from None


def resume_run(run_dir: str | Path, *, quiet: bool = False, **changes: Any) -> RunResult:
    """Continue the run in ``run_dir`` from its checkpoint, with its saved config.

    ``changes`` may set a new step budget (``steps``) and execution settings (``threads``,
    ``device``, ``eval_every``, ...); a change to anything that defines the experiment is refused.

    Example:
        >>> result = resume_run("runs/digits-50/mean_teacher/seed0", steps=3000, threads=1)
    """
    return execute_run(resolve_for_resume(changes, run_dir), resume=True, quiet=quiet)
