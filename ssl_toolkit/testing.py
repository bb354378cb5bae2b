"""Conformance checks that any registered SSLAlgorithm must pass.

A new algorithm gets them for free through the registry-parametrized tests; a plugin author can
call :func:`check_algorithm` from their own test suite.
"""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import torch

from ssl_toolkit.config import resolve_run_config
from ssl_toolkit.trainer import Trainer

# A run on the embedded digits set small enough to take a second or two.
TINY_RUN = {"dataset": "digits", "labels": 20, "batch_size": 32, "labeled_batch_size": 8, "val_size": 50, "threads": 1}


def tiny_run_flags(steps: int = 6, eval_every: int | None = None) -> list[str]:
    """``ssl-bench run`` flags for the tiny digits run (add --algo and --out)."""
    values = {**TINY_RUN, "steps": steps, "eval_every": eval_every or steps}
    return [token for key, value in values.items() for token in (f"--{key.replace('_', '-')}", str(value))] + [
        "--quiet"
    ]


def tiny_trainer(algo: str, out: str | Path, steps: int = 6, **overrides) -> Trainer:
    """A Trainer for ``algo`` on the embedded digits set, small enough to run in a second or two."""
    values = {**TINY_RUN, "algo": algo, "steps": steps, "eval_every": steps, "out": str(out)}
    values.update(overrides)
    return Trainer(resolve_run_config(values))


def check_algorithm(algo: str) -> None:
    """Train ``algo`` a few steps and assert: finite losses, the student changes, state round-trips."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = tiny_trainer(algo, Path(tmp) / "run")
        before = copy.deepcopy(trainer.algorithm.student.state_dict())
        trainer.algorithm.train()
        for step in range(trainer.config.steps):
            values = trainer.train_step(step)
            assert math.isfinite(values["class_loss"]), f"{algo}: class loss {values['class_loss']}"
            assert math.isfinite(values["consistency_loss"]), f"{algo}: consistency {values['consistency_loss']}"
        after = trainer.algorithm.student.state_dict()
        changed = [k for k in before if before[k].dtype.is_floating_point and not torch.equal(before[k], after[k])]
        assert changed, f"{algo}: no student parameter changed after training steps"

        clone = tiny_trainer(algo, Path(tmp) / "clone")
        clone.algorithm.load_state_dict(trainer.algorithm.state_dict())
        x = trainer.data.preprocess(trainer.data.test_images[:16])
        for name, model in trainer.algorithm.eval_models().items():
            model.eval()
            other = clone.algorithm.eval_models()[name].eval()
            assert torch.equal(model(x), other(x)), f"{algo}: {name} differs after a state_dict round trip"
