"""What a new user meets in their first hour: threads, plugins, feedback, help and listings."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ssl_toolkit.cli import build_parser, main
from ssl_toolkit.testing import tiny_run_flags

REPO = Path(__file__).resolve().parents[1]
PLUGIN = textwrap.dedent(
    '''
    from ssl_toolkit import register_algorithm
    from ssl_toolkit.algorithms.supervised import Supervised


    @register_algorithm("{name}")
    class Renamed(Supervised):
        """The supervised baseline under another name: a plugin in a file next to the user."""
    '''
)


def _subprocess(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ssl_toolkit", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.e2e
def test_a_plugin_file_works_by_module_name_from_its_folder_and_by_path_in_compare(tmp_path):
    (tmp_path / "my_plugin.py").write_text(PLUGIN.format(name="renamed_by_module"))
    (tmp_path / "other.py").write_text(PLUGIN.format(name="renamed_by_path"))
    listed = _subprocess(["list", "algorithms", "--plugin", "my_plugin", "--format", "json"], cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "renamed_by_module" in [a["name"] for a in json.loads(listed.stdout)["algorithms"]]
    compared = _subprocess(
        ["compare", "--algos", "renamed_by_path,supervised", "--plugin", str(tmp_path / "other.py"), "--dataset",
         "digits", "--labels", "20", "--steps", "4", "--eval-every", "4", "--batch-size", "32",
         "--labeled-batch-size", "8", "--val-size", "50", "--out", str(tmp_path / "runs")],
        cwd=REPO,
    )
    assert compared.returncode == 0, compared.stderr
    assert (tmp_path / "runs" / "digits-20" / "renamed_by_path" / "seed0" / "final.json").exists()


@pytest.mark.e2e
def test_under_a_pipe_every_evaluation_prints_one_plain_line_and_the_header_names_the_threads(tmp_path):
    result = _subprocess(["run", "--algo", "mean_teacher", *tiny_run_flags(steps=6, eval_every=2)[:-1], "--out",
                          str(tmp_path / "run")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "1 thread(s)" in lines[0] and "mean_teacher on digits" in lines[0]
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["2/6", "4/6", "6/6"]
    assert all("student val" in line and "teacher val" in line and "eta" in line for line in steps)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["threads"] == 1, "the default thread count is recorded with the run"


@pytest.mark.e2e
def test_quiet_prints_no_progress_at_all(tmp_path, capsys):
    assert main(["run", "--algo", "supervised", *tiny_run_flags(steps=4), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert not [line for line in out.splitlines() if line.startswith("step ")]


def _commands() -> dict[str, argparse.ArgumentParser]:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_flag_of_every_command_has_a_sentence_of_help(command):
    parser = _commands()[command]
    assert parser.description, f"ssl-bench {command} --help has no description"
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        assert action.help and len(action.help.split()) >= 2, f"{command} {action.option_strings or action.dest}"


def test_run_help_shows_defaults():
    text = " ".join(_commands()["run"].format_help().split())
    assert "(default: mean_teacher)" in text and "(default: 1)" in text and "(default: the data set's)" in text


def test_list_prints_full_names_when_piped_and_json_on_request(capsys):
    assert main(["list", "presets"]) == 0
    out = capsys.readouterr().out
    assert "mt-svhn-500-extra-convnet13" in out and "pi-cifar10-4000-wrn28-2" in out
    assert main(["list", "--format", "json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert {"algorithms", "datasets", "backbones", "presets"} <= set(listing)
    assert "mt-cifar10-4000-convnet13" in [p["name"] for p in listing["presets"]]


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (["run", "--preset", "mt-cifar10-4000-convnet3"], "did you mean 'mt-cifar10-4000-convnet13'"),
        (["run", "--algo", "mean_teachr"], "did you mean 'mean_teacher'"),
        (["run", "--backbone", "convnet_smal"], "did you mean 'convnet_small'"),
        (["run", "--set", "ema_decy=0.9"], "did you mean 'ema_decay'"),
    ],
)
def test_a_mistyped_name_suggests_the_closest(argv, suggestion, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert suggestion in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
