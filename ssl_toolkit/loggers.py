"""Loggers: the trainer's numbers, sent on to a CSV file, TensorBoard or Weights & Biases (offline).

Each logger is a :class:`~ssl_toolkit.observers.RunObserver`: it writes the training losses,
consistency weight and learning rate of every ``--log-every``-th step, and every evaluation's
errors (with the mean losses since the previous evaluation). metrics.jsonl stays the source of
truth; a logger only shows the same numbers elsewhere. Everything goes under ``RUN_DIR/logs``.

Tags (the same in every logger)::

    train/class_loss  train/consistency_loss  train/consistency_weight  train/lr      every --log-every steps
    train/mean_class_loss  train/mean_consistency_loss                                 every evaluation
    val_error/<model>  test_error/<model>                                              every evaluation

Example:
    ssl-bench run --algo mean_teacher --dataset digits --logger tensorboard --logger csv
    tensorboard --logdir runs/
"""

from __future__ import annotations

import csv
import importlib
import io
import shutil
from pathlib import Path
from typing import Any

from ssl_toolkit.config import RunConfig
from ssl_toolkit.config.run_config import LOGGER_NAMES
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.observers import RunObserver
from ssl_toolkit.results import atomic_write_bytes

LOG_DIR = "logs"
CSV_FILE = "scalars.csv"
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
WANDB_PROJECT = "ssl-bench"
# Loggers that need an optional package: the module to import and the extra that installs it.
OPTIONAL_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


def step_scalars(values: dict[str, float]) -> dict[str, float]:
    """The tags of one training step, from the values the trainer hands its observers."""
    return {
        "train/class_loss": values["class_loss"],
        "train/consistency_loss": values["consistency_loss"],
        "train/consistency_weight": values["weight"],
        "train/lr": values["lr"],
    }


def evaluation_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The tags of one evaluation, from its metrics.jsonl row (a model without validation set has no val tag)."""
    scalars = {"train/mean_class_loss": row["class_loss"], "train/mean_consistency_loss": row["consistency_loss"]}
    for model, error in (row.get("val_error") or {}).items():
        if error is not None:
            scalars[f"val_error/{model}"] = error
    for model, error in row["test_error"].items():
        scalars[f"test_error/{model}"] = error
    return scalars


class ScalarLogger(RunObserver):
    """Base class of the loggers: decides what is logged when; subclasses say where it goes.

    Subclasses implement :meth:`open` (the run starts or resumes at ``trainer.step``), :meth:`write`
    and :meth:`close`; :meth:`flush` is called after every evaluation.
    """

    def __init__(self, folder: str | Path, log_every: int) -> None:
        self.folder = Path(folder) / LOG_DIR
        self.log_every = log_every

    def on_start(self, trainer: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.open(trainer)

    def on_step(self, steps_done: int, values: dict[str, float]) -> None:
        if steps_done % self.log_every == 0:
            self.write(steps_done, step_scalars(values))

    def on_evaluation(self, row: dict[str, Any]) -> None:
        self.write(row["step"], evaluation_scalars(row))
        self.flush()

    def on_end(self) -> None:
        self.close()

    def open(self, trainer: Any) -> None:
        raise NotImplementedError

    def write(self, step: int, scalars: dict[str, float]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Make what was written so far readable (after every evaluation)."""

    def close(self) -> None:
        raise NotImplementedError


class CSVLogger(ScalarLogger):
    """``logs/scalars.csv`` with the columns ``step,tag,value``, rewritten atomically after every evaluation.

    A resumed run keeps the rows up to its checkpoint's step and drops the later ones, which the
    resumed run logs again.
    """

    def open(self, trainer: Any) -> None:
        self.path = self.folder / CSV_FILE
        for stale in self.folder.glob(f".{CSV_FILE}.*.tmp"):  # left by a killed run
            stale.unlink()
        self.rows: list[tuple[int, str, float]] = []
        if trainer.step > 0 and self.path.exists():
            with self.path.open(newline="") as handle:
                self.rows = [(int(r["step"]), r["tag"], float(r["value"])) for r in csv.DictReader(handle)
                             if int(r["step"]) <= trainer.step]

    def write(self, step: int, scalars: dict[str, float]) -> None:
        self.rows += [(step, tag, float(value)) for tag, value in scalars.items()]

    def flush(self) -> None:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(("step", "tag", "value"))
        # repr keeps every float exact, so the file holds the numbers metrics.jsonl holds.
        writer.writerows((step, tag, repr(value)) for step, tag, value in self.rows)
        atomic_write_bytes(self.path, text.getvalue().encode())

    def close(self) -> None:
        self.flush()


class TensorBoardLogger(ScalarLogger):
    """TensorBoard event files in ``logs/tensorboard`` (``tensorboard --logdir runs/``).

    A resumed run tells TensorBoard to hide the events logged after its checkpoint's step (its
    ``purge_step``), so the curves show each step once.
    """

    def open(self, trainer: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = trainer.step + 1 if trainer.step > 0 else None
        self.writer = SummaryWriter(log_dir=str(self.folder / TENSORBOARD_DIR), purge_step=purge)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger(ScalarLogger):
    """A Weights & Biases run in offline mode under ``logs/wandb``; upload it later with ``wandb sync``.

    The run carries the resolved config; it is named after the run folder's parts. A resumed run
    starts a new offline run that continues at the checkpoint's step (resuming a W&B run needs its
    server).
    """

    def __init__(self, folder: str | Path, log_every: int, config: RunConfig) -> None:
        super().__init__(folder, log_every)
        self.config = config

    def open(self, trainer: Any) -> None:
        import wandb

        config = self.config
        # console="off": W&B would otherwise capture stdout/stderr, which the progress display owns.
        settings = wandb.Settings(silent=True, console="off")
        self.run = wandb.init(
            mode="offline", dir=str(self.folder), project=WANDB_PROJECT,
            name=f"{config.dataset}-{config.labels}/{config.algo}/seed{config.seed}",
            group=f"{config.dataset}-{config.labels}", config=config.to_json(), settings=settings,
        )

    def write(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


def check_loggers(names: list[str]) -> None:
    """Raise UserInputError for an unknown logger, or one whose optional package is not installed.

    Called before anything is written, so a missing package stops the run before training.
    """
    for name in names:
        if name not in LOGGER_NAMES:
            raise UserInputError(f"--logger {name!r} is not valid; valid: {', '.join(LOGGER_NAMES)}")
        if name in OPTIONAL_PACKAGES:
            module, extra = OPTIONAL_PACKAGES[name]
            try:
                importlib.import_module(module)
            except ImportError:
                raise UserInputError(
                    f"--logger {name} needs the {module} package, which is not installed; "
                    f"install it with: pip install 'ssl-toolkit[{extra}]'"
                ) from None


def build_loggers(config: RunConfig) -> list[ScalarLogger]:
    """The loggers ``config.loggers`` names, each once, writing under the run folder.

    Only the runner builds them, next to the progress display: under ``torchrun`` it builds them
    on rank 0 alone.
    """
    check_loggers(config.loggers)
    loggers: list[ScalarLogger] = []
    for name in dict.fromkeys(config.loggers):
        if name == "csv":
            loggers.append(CSVLogger(config.out, config.log_every))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(config.out, config.log_every))
        else:
            loggers.append(WandbLogger(config.out, config.log_every, config))
    return loggers


def remove_logs(run_folder: str | Path) -> None:
    """Delete what the loggers wrote in ``run_folder`` (for ``--overwrite``), and nothing else there."""
    folder = Path(run_folder) / LOG_DIR
    (folder / CSV_FILE).unlink(missing_ok=True)
    for stale in folder.glob(f".{CSV_FILE}.*.tmp"):
        stale.unlink()
    for name in (TENSORBOARD_DIR, WANDB_DIR):
        if (folder / name).is_dir():
            shutil.rmtree(folder / name)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
