"""The fast paths are right, not fast: views built only when declared, the foreach EMA, precision,
channels-last and compile give the same losses, and they stay execution settings."""

from __future__ import annotations

import json

import pytest
import torch

import ssl_toolkit.trainer as trainer_module
from ssl_toolkit.cli import main
from ssl_toolkit.config import differences
from ssl_toolkit.data.augment import AugmentConfig, ViewBuilder, get_policy
from ssl_toolkit.ema import ema_update
from ssl_toolkit.registry import get_algorithm, list_algorithms
from ssl_toolkit.testing import tiny_run_flags, tiny_trainer


def _losses(trainer, steps: int) -> list[float]:
    trainer.algorithm.train()
    return [trainer.train_step(step)["class_loss"] for step in range(steps)]


def _without_dropout(trainer):
    # Dropout draws its mask in memory order (channels-last) or from the compiler's own generator
    # (compile): those runs are other samples of the same experiment. Without dropout the math is
    # the same, so the losses must agree to float32 rounding.
    for module in trainer.algorithm.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return trainer


@pytest.mark.parametrize("algo", list_algorithms())
def test_the_trainer_builds_exactly_the_declared_views(algo, tmp_path):
    trainer = tiny_trainer(algo, tmp_path / "run")
    declared = list(get_algorithm(algo).views)
    batch = trainer.make_batch(0)
    assert batch.view_names == declared
    # The generator advanced by exactly those views' draws: rebuilding them from a copy of its
    # starting state ends in the same state.
    replay = torch.Generator().manual_seed(trainer.config.seed)
    config = trainer.config
    augment = AugmentConfig(config.translate, config.flip, config.noise)
    ViewBuilder(get_algorithm(algo).views, trainer.data.preprocess, augment, replay)(trainer.data.pool[batch.index])
    assert torch.equal(replay.get_state(), trainer.augment_generator.get_state())


def test_supervised_and_temporal_ensembling_draw_one_view_per_step():
    for algo in ("supervised", "temporal_ensembling"):
        assert list(get_algorithm(algo).views) == ["student"], algo
    assert get_policy("weak") is not None


def test_foreach_ema_equals_the_per_parameter_formula():
    torch.manual_seed(0)
    teacher, student = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    expected = [0.9 * t.detach() + 0.1 * s.detach() for t, s in zip(teacher.parameters(), student.parameters(),
                                                                     strict=True)]
    ema_update(teacher, student, 0.9)
    for got, want in zip(teacher.parameters(), expected, strict=True):
        assert torch.allclose(got, want, atol=1e-7)


@pytest.mark.parametrize("algo", ["supervised", "mean_teacher"])
def test_channels_last_gives_the_same_losses(algo, tmp_path):
    plain = _losses(_without_dropout(tiny_trainer(algo, tmp_path / "plain")), 4)
    fast = _losses(_without_dropout(tiny_trainer(algo, tmp_path / "cl", channels_last=True)), 4)
    # Same math, other kernels: float32 rounding only.
    assert fast == pytest.approx(plain, rel=1e-4)


@pytest.mark.parametrize("algo", ["supervised", "mean_teacher"])
def test_bf16_autocast_stays_within_bf16_precision_of_fp32(algo, tmp_path):
    plain = _losses(tiny_trainer(algo, tmp_path / "plain"), 4)
    half = _losses(tiny_trainer(algo, tmp_path / "bf16", precision="bf16"), 4)
    # bf16 keeps 8 bits of mantissa (~0.4% per rounding); over a few layers and steps, 5%.
    assert half == pytest.approx(plain, rel=5e-2)


def test_fp16_uses_a_gradient_scaler_and_bf16_and_fp32_do_not(tmp_path):
    assert tiny_trainer("supervised", tmp_path / "a", precision="fp16").scaler.is_enabled()
    assert not tiny_trainer("supervised", tmp_path / "b", precision="bf16").scaler.is_enabled()
    assert not tiny_trainer("supervised", tmp_path / "c").scaler.is_enabled()


@pytest.mark.e2e
def test_compile_gives_the_same_losses_and_keeps_state_dict_keys(tmp_path):
    # Supervised: one network to compile keeps this test to one compilation (tens of seconds on a CPU).
    eager = _without_dropout(tiny_trainer("supervised", tmp_path / "eager"))
    compiled = _without_dropout(tiny_trainer("supervised", tmp_path / "compiled", compile=True))
    assert list(compiled.algorithm.state_dict()) == list(eager.algorithm.state_dict())
    assert _losses(compiled, 3) == pytest.approx(_losses(eager, 3), rel=1e-4)


def test_the_nan_stop_fires_before_the_step_under_bf16(tmp_path, monkeypatch):
    trainer = tiny_trainer("mean_teacher", tmp_path / "run", precision="bf16")
    trainer.algorithm.train()
    before = [p.detach().clone() for p in trainer.algorithm.student.parameters()]
    monkeypatch.setattr(trainer_module, "masked_cross_entropy", lambda logits, y: logits.sum() * float("nan"))
    with pytest.raises(trainer_module.DivergenceError, match="step 1"):
        trainer.train_step(0)
    assert all(torch.equal(b, p) for b, p in zip(before, trainer.algorithm.student.parameters(), strict=True))


@pytest.mark.e2e
def test_precision_compile_and_channels_last_are_execution_settings(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--algo", "mean_teacher", *tiny_run_flags(steps=6), "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    # The digits-cpu preset turns channels-last on: the fastest correct option on a CPU.
    assert (saved["precision"], saved["compile"], saved["channels_last"]) == ("fp32", False, True)
    changed = {**saved, "precision": "bf16", "compile": True, "channels_last": False}
    assert differences(saved, changed) == [], "compare treats them as the same experiment"
    # A resume may change them.
    assert main(["resume", str(out), "--steps", "9", "--precision", "bf16", "--no-channels-last", "--quiet"]) == 0, (
        capsys.readouterr().err
    )
    assert json.loads((out / "config.json").read_text())["precision"] == "bf16"
