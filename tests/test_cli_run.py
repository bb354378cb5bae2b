"""`ssl-bench run` end to end on the embedded digits set, and its one-line errors."""

import json
import subprocess
import sys

import pytest

from ssl_toolkit.cli import main
from ssl_toolkit.testing import tiny_run_flags

pytestmark = pytest.mark.e2e

SMALL = tiny_run_flags(steps=12, eval_every=6)


def test_run_writes_config_split_metrics_and_final(tmp_path, capsys):
    out = tmp_path / "mt"
    assert main(["run", "--algo", "mean_teacher", *SMALL, "--out", str(out), "--set", "ema_decay=0.95"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["algo"] == "mean_teacher" and config["hparams"]["ema_decay"] == 0.95
    assert config["hparams"]["consistency"] == "mse", "defaults are saved resolved"
    split = json.loads((out / "split.json").read_text())
    assert len(split["labeled"]) == 20 and len(split["val"]) == 50 and split["name"] == "digits.0@20-50"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [6, 12]
    for row in rows:
        assert set(row) >= {
            "step",
            "class_loss",
            "consistency_loss",
            "consistency_weight",
            "lr",
            "val_error",
            "test_error",
        }
        assert set(row["test_error"]) == {"student", "teacher"}
    final = json.loads((out / "final.json").read_text())
    for key in ("algo", "dataset", "labels", "seed", "steps", "wall_time_s", "test_error", "val_error"):
        assert key in final
    assert final["test_error"] == rows[-1]["test_error"]
    assert 0.0 <= final["test_error"]["teacher"] <= 100.0
    assert not list(out.glob("*.tmp")), "no temporary files are left behind"
    assert "teacher" in capsys.readouterr().out


def test_supervised_run_reports_only_the_student(tmp_path):
    out = tmp_path / "sup"
    assert main(["run", "--algo", "supervised", *SMALL, "--out", str(out)]) == 0
    assert set(json.loads((out / "final.json").read_text())["test_error"]) == {"student"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--algo", "mean_teachr"], "unknown algorithm 'mean_teachr' (did you mean 'mean_teacher'?); valid: "),
        (["--dataset", "cifar11"], "unknown data set 'cifar11' (did you mean 'cifar10' or 'cifar100'?); valid: "),
        (["--backbone", "no_such_net"], "unknown backbone 'no_such_net'"),
        (["--set", "ema_dacay=0.9"], "unknown key 'ema_dacay'"),
        (["--set", "ema_decay=fast"], "ema_decay='fast' has the wrong type; expected float"),
        (["--set", "ema_decay=1.5"], "ema_decay=1.5 is out of range"),
        (["--labels", "5"], "--labels 5 is fewer than the 10 classes"),
        (["--labels", "5000"], "--labels 5000 is more than"),
        (["--steps", "0"], "--steps 0 is out of range; valid: a positive integer"),
        (["--labeled-batch-size", "32"], "--labeled-batch-size 32 must be smaller than --batch-size 32"),
        (["--dataset", "mnist", "--data-dir", "/nonexistent"], "/nonexistent"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    code = main(["run", "--algo", "mean_teacher", *SMALL, "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_existing_run_folder_is_refused_without_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--algo", "supervised", *SMALL, "--out", str(out)]) == 0
    before = (out / "final.json").read_bytes()
    assert main(["run", "--algo", "supervised", *SMALL, "--out", str(out)]) == 2
    assert "already exists; add --resume" in capsys.readouterr().err
    assert (out / "final.json").read_bytes() == before


def test_console_script_exit_code_is_2_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ssl_toolkit", "run", "--algo", "nope", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown algorithm 'nope'") and "Traceback" not in result.stderr


def test_list_shows_algorithms_with_hyperparameters_and_datasets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for text in ("mean_teacher", "ema_decay", "temporal_ensembling", "ensemble_momentum", "digits", "fashion_mnist"):
        assert text in out
