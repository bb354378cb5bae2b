"""Training from Python on in-memory arrays: one call, defaults for everything a user need not set."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ssl_toolkit.config import RunConfig, resolve_run_config
from ssl_toolkit.data.augment import Preprocess
from ssl_toolkit.data.formats import as_uint8_images
from ssl_toolkit.errors import UserInputError

# The arrays are kept in the run folder, so its config.json reruns and resumes the run.
ARRAYS_FILE = "arrays.npz"
PREDICT_BATCH = 500


@dataclass
class ArrayRun:
    """A finished run of :func:`train_on_arrays`: its summary, its folder and the trained models.

    ``final`` is final.json's content (test and validation error of each model, the best-validation
    step); ``models`` maps each evaluated model's name (``student``, and ``teacher`` for algorithms
    with one) to the trained network, in eval mode on the training device.

    Example:
        >>> run = train_on_arrays(x_train, y_train, x_test, y_test, algo="fixmatch", labels=100)
        >>> run.test_error["student"], run.predict(x_new)[:5]
    """

    config: RunConfig
    final: dict[str, Any]
    models: dict[str, nn.Module]
    preprocess: Preprocess
    class_logits: Any
    folder: Path

    @property
    def test_error(self) -> dict[str, float]:
        """Test error in percent of each evaluated model at the end of the run."""
        return self.final["test_error"]

    @torch.no_grad()
    def predict(self, images: np.ndarray | torch.Tensor, model: str = "student") -> np.ndarray:
        """Class indices that ``model`` predicts for ``images``, given in any layout training accepted."""
        if model not in self.models:
            raise UserInputError(f"predict: no model {model!r}; valid: {', '.join(self.models)}")
        network = self.models[model].eval()
        array = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        pixels = torch.from_numpy(as_uint8_images(Path("predict()"), "images", array))
        device = next(network.parameters()).device
        predicted = [
            self.class_logits(network(self.preprocess(pixels[start : start + PREDICT_BATCH].to(device)))).argmax(1)
            for start in range(0, len(pixels), PREDICT_BATCH)
        ]
        return torch.cat(predicted).cpu().numpy() if predicted else np.zeros(0, dtype=np.int64)


def train_on_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    algo: str = "mean_teacher",
    labels: int | None = None,
    x_unlabeled: np.ndarray | None = None,
    class_names: list[str] | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    quiet: bool = True,
    **settings: Any,
) -> ArrayRun:
    """Train ``algo`` on your own arrays and return the trained models.

    Images are ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` with 1 or 3 channels, as uint8
    or as floats in [0, 1]; labels are class indices. ``labels`` training images (class-balanced,
    seeded) keep their label, the others and ``x_unlabeled`` are unlabeled. ``settings`` are any
    ``ssl-bench run`` setting by its key (``steps``, ``batch_size``, ``backbone``, ``seed``,
    ``threads``, ``hparams={"consistency_weight": 5.0}``, ...); everything left out takes the
    defaults of ``--dataset npz``. The run folder (``out``, by default
    ``runs/npz-<labels>/<algo>/seed<seed>``) gets the usual files plus the arrays, so
    ``ssl-bench resume`` and ``ssl-bench run --config <out>/config.json`` work on it.

    Every value is checked before anything is written; a loss that turns non-finite raises
    :class:`ssl_toolkit.trainer.DivergenceError`.
    """
    from ssl_toolkit.progress import progress_observers
    from ssl_toolkit.runner import check_folder, clear_run_files
    from ssl_toolkit.trainer import Trainer

    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    if x_unlabeled is not None:
        arrays["x_unlabeled"] = x_unlabeled
    if class_names is not None:
        arrays["class_names"] = np.asarray(class_names, dtype=str)
    with tempfile.TemporaryDirectory(prefix="ssl-bench-arrays-") as staging:
        staged = Path(staging) / ARRAYS_FILE
        np.savez(staged, **{key: np.asarray(value) for key, value in arrays.items()})
        values = {**settings, "algo": algo, "dataset": "npz", "labels": labels, "data_dir": str(staged),
                  "out": None if out is None else str(out)}
        config = resolve_run_config(values)
        folder = Path(config.out)
        if folder.exists() and not overwrite:
            raise UserInputError(f"run folder {folder} already exists; pass overwrite=True to replace it, "
                                 f"or another out")
        clear = check_folder(config, resume=False, overwrite=overwrite)
        trainer = Trainer(config)  # reads and checks the arrays, the split and the model
        if clear:
            clear_run_files(folder)
        folder.mkdir(parents=True, exist_ok=True)
        saved = folder / ARRAYS_FILE
        shutil.move(staged, saved)
        config.data_dir = str(saved.resolve())  # an execution setting: where the same data now lives
        final = trainer.run(progress_observers(quiet))
    models = trainer.algorithm.eval_models()
    for model in models.values():
        model.eval()
    return ArrayRun(config, final, models, trainer.data.preprocess, trainer.algorithm.class_logits, folder)
