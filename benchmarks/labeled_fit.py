"""How well each finished run fits its own labeled images, beside its test error.

Usage: python benchmarks/labeled_fit.py RUN_DIR [RUN_DIR ...]

Loads each run's checkpoint and prints, for every model it evaluates (student, teacher), the error
on the run's labeled training images (eval mode, no augmentation) and on the test set. A
consistency term that is too strong for the backbone shows as a high labeled-set error: the model
can no longer fit the labels it was given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ssl_toolkit.config import resolve_run_config
from ssl_toolkit.evaluation import error_rate
from ssl_toolkit.trainer import Trainer


def labeled_and_test_error(run_dir: Path) -> tuple[int, dict[str, tuple[float, float]]]:
    """The checkpoint's step, and (labeled-set error, test error) of each model it evaluates."""
    config = resolve_run_config({"out": str(run_dir), "threads": 1}, config_file=str(run_dir / "config.json"))
    trainer = Trainer(config, resume=True)
    data = trainer.data
    labeled = torch.from_numpy(data.split.labeled).to(trainer.device)
    images, labels = data.pool[labeled], data.pool_labels[labeled]
    logits_of = trainer.algorithm.class_logits
    errors = {
        name: (
            error_rate(model, images, labels, data.preprocess, logits_of),
            error_rate(model, data.test_images, data.test_labels, data.preprocess, logits_of),
        )
        for name, model in trainer.algorithm.eval_models().items()
    }
    return trainer.step, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    args = parser.parse_args()
    width = max(len(str(run_dir)) for run_dir in args.run_dirs) + 2
    print(f"{'run':<{width}}{'model':<10}{'labeled error %':>17}{'test error %':>14}{'step':>7}")
    for run_dir in args.run_dirs:
        step, errors = labeled_and_test_error(run_dir)
        for name, (labeled, test) in errors.items():
            print(f"{str(run_dir):<{width}}{name:<10}{labeled:>17.2f}{test:>14.2f}{step:>7}")


if __name__ == "__main__":
    main()
