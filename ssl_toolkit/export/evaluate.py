"""Test error of a trained model, from its run folder or its export, next to the error the run recorded.

Both paths compute the error exactly as the trainer does (:func:`ssl_toolkit.evaluation.error_rate`,
same batches, same preprocessing), so on the device the run evaluated on, the number is the one in
final.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ssl_toolkit.errors import UserInputError
from ssl_toolkit.evaluation import error_rate
from ssl_toolkit.export.folder import CONFIG_FILE, MODEL_FILE, load_exported, read_export_config
from ssl_toolkit.export.rebuild import load_run, pick_model, recorded_test_error
from ssl_toolkit.results import RunFolder


@dataclass(frozen=True)
class Evaluation:
    """One model's test error (%) now, and the one the run recorded at the same step (None if none)."""

    model: str
    step: int
    test_error: float
    recorded: float | None

    @property
    def matches(self) -> bool | None:
        return None if self.recorded is None else self.test_error == self.recorded


def is_export(path: str | Path) -> bool:
    return (Path(path) / MODEL_FILE).is_file() and (Path(path) / CONFIG_FILE).is_file()


def evaluate_run(run_dir: str | Path, models: list[str] | None = None, data_dir: str | None = None,
                 device: str | None = None) -> list[Evaluation]:
    """Rebuild the run in ``run_dir`` from its checkpoint and evaluate ``models`` (all evaluated ones by default)."""
    trainer = load_run(run_dir, device, data_dir)
    names = models or list(trainer.algorithm.eval_models())
    data, results = trainer.data, []
    for name in names:
        model = pick_model(trainer, name)
        error = error_rate(model, data.test_images, data.test_labels, data.preprocess, trainer.algorithm.class_logits)
        results.append(Evaluation(name, trainer.step, error, recorded_test_error(run_dir, trainer.step, name)))
    return results


def evaluate_export(folder: str | Path, data_dir: str | None = None, device: str | None = None) -> Evaluation:
    """Load the export in ``folder`` and evaluate it on the test set of the data set it was trained on.

    ``data_dir`` points at the data set's files when they have moved since training.
    """
    from ssl_toolkit.config import RunConfig
    from ssl_toolkit.registry import load_plugins
    from ssl_toolkit.run_data import load_arrays
    from ssl_toolkit.trainer import pick_device

    record = read_export_config(folder)["ssl_bench"]
    saved = record["run_config"]
    load_plugins(saved.get("plugins") or [])
    known = {key: value for key, value in saved.items() if key in RunConfig.__dataclass_fields__}
    # Only the test set is evaluated: leave SVHN's extra and STL-10's unlabeled images unread.
    config = RunConfig(**{**known, "svhn_extra": False, "max_unlabeled": 1,
                          **({"data_dir": data_dir} if data_dir else {})})
    target = pick_device(device or config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    model, preprocess = load_exported(folder, target)
    arrays = load_arrays(config)
    if tuple(arrays.x_test.shape[1:]) != preprocess.input_size:
        raise UserInputError(f"{config.dataset} test images are {tuple(arrays.x_test.shape[1:])}, the export takes "
                             f"{preprocess.input_size}; valid: the data set the model was trained on")
    images = torch.from_numpy(arrays.x_test).to(target)
    labels = torch.from_numpy(arrays.y_test).to(target)
    error = error_rate(model, images, labels, preprocess)
    return Evaluation(record["model"], record["step"], error, record.get("test_error"))


def evaluate_path(path: str | Path, models: list[str] | None = None, data_dir: str | None = None,
                  device: str | None = None) -> list[Evaluation]:
    """:func:`evaluate_export` for an export folder, :func:`evaluate_run` for a run folder."""
    if is_export(path):
        exported = read_export_config(path)["ssl_bench"]["model"]
        wrong = [name for name in models or [] if name != exported]
        if wrong:
            raise UserInputError(f"--model {wrong[0]}: the export in {path} holds the {exported}; valid: {exported}")
        return [evaluate_export(path, data_dir, device)]
    if not RunFolder(path).config.is_file():
        raise UserInputError(f"{path} is neither a run folder (config.json, checkpoint.pt) nor an export "
                             f"(model.safetensors, config.json)")
    return evaluate_run(path, models, data_dir, device)
