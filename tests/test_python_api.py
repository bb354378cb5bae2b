"""train_on_arrays: training from Python on in-memory arrays, with the run folder the command line uses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from ssl_toolkit import ArrayRun, UserInputError, train_on_arrays
from ssl_toolkit.cli import main

FAST = {"backbone": "convnet_tiny", "steps": 30, "batch_size": 32, "labeled_batch_size": 8, "val_size": 50,
        "eval_every": 15, "translate": 1, "threads": 1}


@pytest.fixture(scope="module")
def arrays():
    digits = load_digits()
    images = (digits.images * 16).clip(0, 255).astype(np.uint8)
    return images[:1400], digits.target[:1400], images[1400:], digits.target[1400:]


@pytest.fixture(scope="module")
def trained(arrays, tmp_path_factory) -> ArrayRun:
    out = tmp_path_factory.mktemp("api") / "run"
    return train_on_arrays(*arrays, algo="mean_teacher", labels=30, out=out, **FAST)


def test_the_result_holds_the_finished_runs_summary_and_both_models(trained):
    final = json.loads((trained.folder / "final.json").read_text())
    assert trained.final == final and final["steps"] == 30 and final["labels"] == 30
    assert set(trained.models) == {"student", "teacher"} and not trained.models["student"].training


def test_predict_agrees_with_the_recorded_test_error(trained, arrays):
    x_test, y_test = arrays[2], arrays[3]
    for model, error in trained.test_error.items():
        predicted = trained.predict(x_test, model=model)
        assert predicted.shape == y_test.shape
        assert 100.0 * np.mean(predicted != y_test) == pytest.approx(error)


def test_predict_takes_the_same_layouts_as_training(trained, arrays):
    x = arrays[2][:20]
    expected = trained.predict(x)
    assert np.array_equal(trained.predict(x[:, None]), expected)             # (N, C, H, W)
    assert np.array_equal(trained.predict(x[..., None]), expected)           # (N, H, W, C)
    assert np.array_equal(trained.predict(torch.from_numpy(x / 255.0)), expected)  # floats in [0, 1]


def test_the_run_folder_keeps_the_arrays_so_the_command_line_resumes_it(trained, capsys):
    config = json.loads((trained.folder / "config.json").read_text())
    assert config["dataset"] == "npz" and config["data_dir"] == str((trained.folder / "arrays.npz").resolve())
    assert main(["resume", str(trained.folder), "--steps", "40", "--quiet"]) == 0, capsys.readouterr().err
    assert json.loads((trained.folder / "final.json").read_text())["steps"] == 40


def test_settings_left_out_take_the_defaults_sized_to_the_data(arrays, tmp_path):
    run = train_on_arrays(*arrays, algo="supervised", labels=20, out=tmp_path / "run", steps=5, threads=1,
                          backbone="convnet_tiny", translate=1)
    # defaults_for_data sizes own data: 64 images a step, 16 of them labeled, seed 0 (docs/extending.md).
    assert run.config.batch_size == 64 and run.config.labeled_batch_size == 16 and run.config.seed == 0


@pytest.mark.parametrize("change, message", [
    ({"steps": 0}, "--steps 0 is out of range"),
    ({"algo": "mean_teachr"}, "unknown algorithm 'mean_teachr'"),
    ({"hparams": {"ema_decay": 2.0}}, "ema_decay=2.0 is out of range"),
    ({"labels": 5}, "--labels 5 is fewer than the 10 classes"),
])
def test_bad_input_raises_before_anything_is_written(arrays, tmp_path, change, message):
    settings = {**FAST, "algo": "mean_teacher", "labels": 30, **change}
    with pytest.raises(UserInputError, match=message):
        train_on_arrays(*arrays, out=tmp_path / "run", **settings)
    assert not (tmp_path / "run").exists()


def test_bad_images_raise_before_anything_is_written(arrays, tmp_path):
    x_train, y_train, x_test, y_test = arrays
    with pytest.raises(UserInputError, match="x_train"):
        train_on_arrays(x_train.astype(np.float32) * 2.0, y_train, x_test, y_test, out=tmp_path / "run", **FAST)
    assert not (tmp_path / "run").exists()


def test_an_existing_run_folder_needs_overwrite(trained, arrays):
    with pytest.raises(UserInputError, match="already exists; pass overwrite=True"):
        train_on_arrays(*arrays, out=trained.folder, **FAST)
