"""A short `ssl-bench run` on every data set, from tiny files the test writes in the official formats."""

import json

import numpy as np
import pytest
from official_format_files import (
    cifar_rows,
    position_images,
    py2_pickle,
    stl_bytes,
    write_cifar10,
    write_imagefolder,
    write_mnist,
    write_npz,
    write_svhn,
)

from ssl_toolkit.cli import main
from ssl_toolkit.config import CONFIG_KEYS, list_presets, resolve_run_config
from ssl_toolkit.data.sources import get_dataset_spec, list_datasets

pytestmark = pytest.mark.e2e


def _cifar100(parent):
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", 200), ("test", 20)):
        fine = np.arange(n) % 100
        batch = {
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine // 5).tolist(),
            "data": cifar_rows(position_images(n, 3, 32, 32)),
            "filenames": [f"{i}.png" for i in range(n)],
        }
        (folder / name).write_bytes(py2_pickle(batch))
    (folder / "meta").write_bytes(py2_pickle({"fine_label_names": [f"f{i}" for i in range(100)]}))
    return parent, ["--labels", "100", "--batch-size", "16", "--labeled-batch-size", "4"]


def _stl10(parent):
    folder = parent / "stl10_binary"
    folder.mkdir(parents=True)
    for split, n in (("train", 20), ("test", 10)):
        (folder / f"{split}_X.bin").write_bytes(stl_bytes(position_images(n, 3, 96, 96)))
        (folder / f"{split}_y.bin").write_bytes((np.arange(n) % 10 + 1).astype(np.uint8).tobytes())
    (folder / "unlabeled_X.bin").write_bytes(stl_bytes(position_images(6, 3, 96, 96, offset=7)))
    return parent, []


CASES = {
    "cifar10": lambda p: (p, []) if write_cifar10(p, per_batch=4) else None,
    "cifar100": _cifar100,
    "svhn": lambda p: (p, ["--svhn-extra"]) if write_svhn(p / "svhn", n_train=20, n_extra=4) else None,
    "stl10": _stl10,
    "mnist": lambda p: (p, []) if write_mnist(p, gz=True, n_train=20) else None,
    "fashion_mnist": lambda p: (p, []) if write_mnist(p, gz=False, n_train=20) else None,
    "imagefolder": lambda p: (
        (p, ["--labels", "3", "--batch-size", "4", "--labeled-batch-size", "1"])
        if write_imagefolder(p, size=12, unlabeled=3)
        else None
    ),
    "npz": lambda p: (
        (p / "d.npz", ["--labels", "3", "--batch-size", "3", "--labeled-batch-size", "1"])
        if write_npz(p / "d.npz", unlabeled=2)
        else None
    ),
    # Embedded in scikit-learn: nothing to write.
    "digits": lambda p: (p, []),
}


@pytest.mark.parametrize("dataset", list_datasets())
def test_every_registered_data_set_has_sample_files_here(dataset):
    # A new data set gets the short-run test below the moment it adds a sample writer to CASES.
    assert dataset in CASES, f"data set {dataset!r} is registered but tests/test_dataset_runs.py writes no sample files"


@pytest.mark.parametrize("dataset", list_datasets())
def test_every_registered_data_sets_defaults_resolve_to_a_valid_run_config(dataset, tmp_path):
    spec = get_dataset_spec(dataset)
    assert set(spec.run_defaults) <= set(CONFIG_KEYS), "run defaults name RunConfig fields"
    assert spec.default_preset is None or spec.default_preset in list_presets()
    values = {"dataset": dataset, "out": "unused"}
    if spec.sized_to_data:  # defaults read from the data itself
        (tmp_path / "data").mkdir()
        values["data_dir"] = str(CASES[dataset](tmp_path / "data")[0])
    config = resolve_run_config(values)
    assert config.steps > 0 and 0 < config.labeled_batch_size < config.batch_size and config.eval_every > 0


def test_own_data_gets_a_network_validation_set_and_budget_sized_to_it(tmp_path):
    write_imagefolder(tmp_path / "images", size=12, unlabeled=3)
    small = resolve_run_config({"dataset": "imagefolder", "data_dir": str(tmp_path / "images"), "out": "x"})
    assert small.backbone == "convnet_tiny" and small.steps == 500 and small.eval_every == 50
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "big.npz", x_train=rng.integers(0, 256, (2000, 3, 32, 32), dtype=np.uint8),
             y_train=np.arange(2000) % 10, x_test=rng.integers(0, 256, (50, 3, 32, 32), dtype=np.uint8),
             y_test=np.arange(50) % 10)
    big = resolve_run_config({"dataset": "npz", "data_dir": str(tmp_path / "big.npz"), "out": "x"})
    # 10% validation, then about 30 passes over the 1800 unlabeled images in batches of 48.
    assert big.backbone == "convnet_small" and big.val_size == 200 and big.steps == round(30 * 1800 / 48)
    given = resolve_run_config({"dataset": "npz", "data_dir": str(tmp_path / "big.npz"), "out": "x",
                                "steps": 700, "backbone": "convnet13", "val_size": 0})
    assert (given.steps, given.backbone, given.val_size) == (700, "convnet13", 0), "what the user gives wins"


def _short_run(algo, dataset, data_dir) -> list[str]:
    """A two-step run of ``algo`` on tiny files: 10 labels, no validation set, convnet_tiny."""
    return ["run", "--algo", algo, "--dataset", dataset, "--data-dir", str(data_dir), "--labels", "10",
            "--val-size", "0", "--batch-size", "8", "--labeled-batch-size", "2", "--steps", "2",
            "--backbone", "convnet_tiny", "--threads", "1", "--quiet"]


@pytest.mark.parametrize("dataset", list_datasets())
def test_short_run_on_test_written_official_files(tmp_path, dataset):
    (tmp_path / "data").mkdir()
    data_dir, extra = CASES[dataset](tmp_path / "data")
    out = tmp_path / "run"
    argv = [*_short_run("mean_teacher", dataset, data_dir), "--eval-every", "2", "--out", str(out), *extra]
    assert main(argv) == 0
    final = json.loads((out / "final.json").read_text())
    assert set(final["test_error"]) == {"student", "teacher"}
    split = json.loads((out / "split.json").read_text())
    assert split["name"].startswith(f"{dataset}.0@")


def test_zca_run_on_cifar10_files(tmp_path):
    write_cifar10(tmp_path / "data", per_batch=4)
    out = tmp_path / "run"
    argv = [*_short_run("pi_model", "cifar10", tmp_path / "data"), "--zca", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "config.json").read_text())["zca"] is True
