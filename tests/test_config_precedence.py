"""Config precedence: command line > --config file > preset > defaults, and a saved config.json reruns
its run exactly. Presets come from a temporary folder, so the shipped presets can change freely."""

from __future__ import annotations

import itertools
import json

import pytest

import ssl_toolkit.config.presets as presets_module
from ssl_toolkit.cli import build_parser, main
from ssl_toolkit.cli.parsing import config_values
from ssl_toolkit.config import RunConfig, resolve_run_config

# One value per layer for each checked key; "default" is what no layer sets.
VALUES = {
    "lr": {"default": RunConfig.lr, "preset": 0.001, "file": 0.002, "cli": 0.004},
    "eval_every": {"default": 500, "preset": 5, "file": 4, "cli": 3},  # 500: digits' run default
    "ema_decay": {"default": 0.99, "preset": 0.9, "file": 0.95, "cli": 0.97},  # a hyperparameter
}
CLI_FLAGS = ["--lr", "0.004", "--eval-every", "3", "--set", "ema_decay=0.97"]


@pytest.fixture
def presets(tmp_path, monkeypatch):
    """``mine`` sets every checked key; ``digits-cpu`` (the data set's default preset) sets none."""
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "mine.yaml").write_text(
        "description: test preset\nconfig:\n  lr: 0.001\n  eval_every: 5\n  steps: 11\n"
        "  hparams:\n    ema_decay: 0.9\n    consistency: kl\n"
    )
    (folder / "other.yaml").write_text("description: another\nconfig:\n  steps: 13\n")
    (folder / "digits-cpu.yaml").write_text("description: digits defaults\nconfig:\n  labels: 30\n")
    monkeypatch.setattr(presets_module, "PRESET_DIR", folder)  # the loader reads it at call time
    return folder


def resolve(tmp_path, layers: set[str], extra_cli: list[str] = ()) -> RunConfig:
    """Resolve through the real argument parser with the given layers present."""
    argv = ["run", "--algo", "mean_teacher", "--dataset", "digits", *extra_cli]
    config_file = None
    if "preset" in layers:
        argv += ["--preset", "mine"]
    if "file" in layers:
        config_file = tmp_path / "run.yaml"
        config_file.write_text("lr: 0.002\neval_every: 4\nhparams:\n  ema_decay: 0.95\n")
        argv += ["--config", str(config_file)]
    if "cli" in layers:
        argv += CLI_FLAGS
    args = build_parser().parse_args(argv)
    return resolve_run_config(config_values(args), args.config)


LAYER_SETS = [set(c) for n in range(4) for c in itertools.combinations(("preset", "file", "cli"), n)]


@pytest.mark.parametrize("layers", LAYER_SETS, ids=lambda s: "+".join(sorted(s)) or "defaults")
def test_the_highest_layer_present_wins_for_every_key(layers, tmp_path, presets):
    config = resolve(tmp_path, layers)
    winner = next((layer for layer in ("cli", "file", "preset") if layer in layers), "default")
    assert config.lr == VALUES["lr"][winner]
    assert config.eval_every == VALUES["eval_every"][winner]
    assert config.hparams["ema_decay"] == VALUES["ema_decay"][winner]


def test_hyperparameters_merge_key_by_key_across_layers(tmp_path, presets):
    config = resolve(tmp_path, {"preset", "file", "cli"})
    # The preset's consistency survives although the file and command line set other hyperparameters.
    assert config.hparams["consistency"] == "kl"
    assert config.hparams["ema_decay"] == 0.97
    assert config.hparams["ema_decay_after_rampup"] == 0.999, "unset hyperparameters take their defaults"


def test_keys_no_layer_sets_take_the_defaults(tmp_path, presets):
    config = resolve(tmp_path, {"preset", "file", "cli"})
    assert config.steps == 11, "from the preset"
    assert config.batch_size == 64 and config.labeled_batch_size == 16, "the data set's run defaults"
    assert config.optimizer == "adam" and config.beta1 == 0.9, "RunConfig's defaults"
    assert config.checkpoint_every == config.eval_every == 3, "checkpoints default to the evaluation period"


def test_the_data_sets_default_preset_is_the_preset_layer(tmp_path, presets):
    assert resolve(tmp_path, set()).labels == 30, "digits-cpu sets labels"
    assert resolve(tmp_path, set()).preset == "digits-cpu"
    named = resolve(tmp_path, {"preset"})
    assert named.preset == "mine" and named.labels == 50, "a named preset replaces the default one"


def test_a_preset_named_in_the_config_file_applies_and_the_command_line_can_replace_it(tmp_path, presets):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("preset: mine\n")
    assert resolve_run_config({}, str(config_file)).steps == 11
    assert resolve_run_config({"preset": "other"}, str(config_file)).steps == 13


def test_a_flag_left_out_does_not_override_the_config_file(tmp_path, presets):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("flip: true\nnoise: 0.0\n")
    args = build_parser().parse_args(["run", "--config", str(config_file)])
    config = resolve_run_config(config_values(args), args.config)
    assert config.flip is True and config.noise == 0.0
    args = build_parser().parse_args(["run", "--config", str(config_file), "--no-flip"])
    assert resolve_run_config(config_values(args), args.config).flip is False


def test_a_saved_config_json_reproduces_its_run(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    flags = [
        "--algo", "mean_teacher", "--dataset", "digits", "--labels", "30", "--steps", "16", "--eval-every", "8",
        "--batch-size", "32", "--labeled-batch-size", "8", "--val-size", "60", "--seed", "3", "--threads", "1",
        "--set", "ema_decay=0.95", "--lr", "0.002", "--quiet",
    ]
    assert main(["run", *flags, "--out", str(first)]) == 0
    assert main(["run", "--config", str(first / "config.json"), "--out", str(second), "--quiet"]) == 0
    capsys.readouterr()
    saved = json.loads((first / "config.json").read_text())
    rerun = json.loads((second / "config.json").read_text())
    assert {**saved, "out": None} == {**rerun, "out": None}
    assert (first / "metrics.jsonl").read_text() == (second / "metrics.jsonl").read_text()
    finals = [json.loads((folder / "final.json").read_text()) for folder in (first, second)]
    for key in ("test_error", "val_error", "best_val", "split"):
        assert finals[0][key] == finals[1][key]


def test_exponent_floats_without_a_dot_are_floats_on_the_command_line_and_in_saved_configs(tmp_path):
    # YAML 1.1 reads 1e-6 as a string; JSON writes VAT's xi=1e-6 as 1e-06, which a resume reads back.
    from ssl_toolkit.config import parse_scalar, read_config_file

    assert parse_scalar("1e-6") == 1e-6 and parse_scalar("-2.5E+3") == -2500.0 and parse_scalar("1e") == "1e"
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps({"algo": "vat", "hparams": {"xi": 1e-6}}))
    assert read_config_file(saved)["hparams"]["xi"] == 1e-6
    assert resolve_run_config({}, saved).hparams["xi"] == 1e-6
