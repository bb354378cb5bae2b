"""Determinism: on the CPU the same config and seed give bit-identical results; --deterministic asks
torch for the same on a GPU."""

from __future__ import annotations

import json
import os

import pytest
import torch

from ssl_toolkit.cli import main
from ssl_toolkit.registry import list_algorithms
from ssl_toolkit.testing import tiny_trainer

pytestmark = pytest.mark.e2e

OPTIONS = {"steps": 10, "eval_every": 5, "batch_size": 64, "labeled_batch_size": 8}


def trained(algo: str, out, **overrides):
    trainer = tiny_trainer(algo, out, **{**OPTIONS, **overrides})
    final = trainer.run()
    final.pop("wall_time_s")
    return trainer, final, (out / "metrics.jsonl").read_text()


@pytest.mark.parametrize("algo", list_algorithms())
def test_same_config_and_seed_give_identical_results_on_the_cpu(algo, tmp_path):
    first, final_a, metrics_a = trained(algo, tmp_path / "a")
    second, final_b, metrics_b = trained(algo, tmp_path / "b")
    assert metrics_a == metrics_b
    assert final_a == final_b
    state_a, state_b = first.algorithm.state_dict(), second.algorithm.state_dict()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), f"{algo}: {key} differs between identical runs"


def test_another_seed_gives_other_results(tmp_path):
    # The check above would pass for a run that ignored its randomness; this one would not.
    _, final_a, metrics_a = trained("mean_teacher", tmp_path / "a")
    _, final_b, metrics_b = trained("mean_teacher", tmp_path / "b", seed=1)
    assert metrics_a != metrics_b
    rows_a = [json.loads(line) for line in metrics_a.splitlines()]
    rows_b = [json.loads(line) for line in metrics_b.splitlines()]
    assert rows_a[0]["class_loss"] != rows_b[0]["class_loss"]


@pytest.fixture
def restore_determinism_setting():
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def test_deterministic_flag_is_saved_turns_on_deterministic_kernels_and_keeps_cpu_results(
    tmp_path, monkeypatch, capsys, restore_determinism_setting
):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    flags = [
        "run", "--algo", "temporal_ensembling", "--dataset", "digits", "--labels", "20", "--steps", "8",
        "--eval-every", "4", "--batch-size", "32", "--labeled-batch-size", "8", "--val-size", "50",
        "--threads", "1", "--quiet",
    ]
    assert main([*flags, "--out", str(tmp_path / "plain")]) == 0
    assert not torch.are_deterministic_algorithms_enabled()
    assert main([*flags, "--deterministic", "--out", str(tmp_path / "det")]) == 0
    assert torch.are_deterministic_algorithms_enabled()
    assert json.loads((tmp_path / "det" / "config.json").read_text())["deterministic"] is True
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["deterministic"] is False
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    # The CPU kernels are deterministic already: the flag changes nothing there.
    assert (tmp_path / "det" / "metrics.jsonl").read_text() == (tmp_path / "plain" / "metrics.jsonl").read_text()
