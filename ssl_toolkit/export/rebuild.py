"""A finished (or stopped) run rebuilt from its folder: the same data, preprocessing and models it trained.

The run is rebuilt by the trainer's own resume path, so its data set, split and saved
preprocessing statistics are read exactly as a resumed run reads them, and every check the resume
makes (checkpoint format, config, algorithm) is made here too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssl_toolkit.errors import UserInputError
from ssl_toolkit.results import RunFolder


def load_run(run_dir: str | Path, device: str | None = None, data_dir: str | None = None) -> Any:
    """The :class:`~ssl_toolkit.trainer.Trainer` of the run in ``run_dir``, restored from its checkpoint.

    ``device`` (``cpu``, ``cuda``, ``auto``) and ``data_dir`` (where the data set's files are now)
    replace the run's own settings when given.
    """
    from ssl_toolkit.runner import resolve_for_resume
    from ssl_toolkit.trainer import Trainer

    folder = RunFolder(run_dir)
    if not folder.config.is_file():
        raise UserInputError(f"{folder.path} holds no run (no config.json); valid: a folder written by ssl-bench run")
    changes = {key: value for key, value in (("device", device), ("data_dir", data_dir)) if value}
    config = resolve_for_resume(changes, folder.path)
    return Trainer(config, resume=True)


def pick_model(trainer: Any, name: str) -> nn.Module:
    """The evaluated model ``name`` (``student``, ``teacher``) of the rebuilt run."""
    models = trainer.algorithm.eval_models()
    if name not in models:
        raise UserInputError(f"--model {name}: {trainer.config.algo} evaluates {', '.join(models)}; "
                             f"valid: {', '.join(models)}")
    return models[name]


def classifier_network(trainer: Any, name: str) -> nn.Module:
    """The plain timm network inside evaluated model ``name`` whose output is that model's class logits.

    An algorithm may wrap the backbone (Mean Teacher's two heads put a second classifier beside it);
    the network is the outermost module with timm's classifier interface, and it is used only after
    checking, on test images, that it computes exactly the logits the algorithm evaluates.
    """
    model = pick_model(trainer, name)
    network = next((m for m in model.modules() if hasattr(m, "get_classifier") and hasattr(m, "forward_features")),
                   None)
    data = trainer.data
    probe = data.preprocess(data.test_images[:16])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            same = network is not None and torch.equal(trainer.algorithm.class_logits(model(probe)), network(probe))
    finally:
        model.train(was_training)
    if not same:
        raise UserInputError(f"--model {name}: the {trainer.config.algo} model's class logits do not come from a "
                             f"timm network inside it, so it cannot be exported as one")
    return network


def recorded_test_error(folder: str | Path, step: int, name: str) -> float | None:
    """The test error (%) of model ``name`` that the run recorded at ``step``: final.json's when the run
    finished there, else its metrics.jsonl row of that step; None when no evaluation was recorded then."""
    run = RunFolder(folder)
    if run.final.is_file():
        final = json.loads(run.final.read_text())
        if final.get("steps") == step and name in final.get("test_error", {}):
            return final["test_error"][name]
    if run.metrics.is_file():
        for line in run.metrics.read_text().splitlines():
            row = json.loads(line)
            if row.get("step") == step and name in row.get("test_error", {}):
                return row["test_error"][name]
    return None
