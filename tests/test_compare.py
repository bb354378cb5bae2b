"""``ssl-bench compare`` / ``sweep`` end to end on digits: real runs, a few steps each."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_toolkit.cli import main as cli_main

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
ALGOS = ("supervised", "mean_teacher")
SEEDS = (0, 1)
RUN_FLAGS = ["--steps", "20", "--eval-every", "10"]


def compare_args(out: Path, *extra: str) -> list[str]:
    return [
        "compare",
        "--algos",
        ",".join(ALGOS),
        "--dataset",
        "digits",
        "--labels",
        "50",
        "--seeds",
        ",".join(map(str, SEEDS)),
        "--jobs",
        "2",
        "--out",
        str(out),
        *RUN_FLAGS,
        *extra,
    ]


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("compare") / "runs"
    result = subprocess.run(
        [sys.executable, "-m", "ssl_toolkit", *compare_args(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out, result


def run_dir(out: Path, algo: str, seed: int) -> Path:
    return out / "digits-50" / algo / f"seed{seed}"


def csv_row(out: Path, selection: str, algo: str, model: str) -> dict[str, str]:
    rows = list(csv.DictReader((out / "results.csv").open()))
    (row,) = [r for r in rows if (r["selection"], r["algorithm"], r["model"]) == (selection, algo, model)]
    return row


def test_compare_table_equals_the_run_folders(compared) -> None:
    out, result = compared
    assert result.returncode == 0, result.stderr
    for algo in ALGOS:
        finals = [json.loads((run_dir(out, algo, s) / "final.json").read_text()) for s in SEEDS]
        models = ["student", "teacher"] if algo == "mean_teacher" else ["student"]
        for model in models:
            final_errors = [f["test_error"][model] for f in finals]
            row = csv_row(out, "final", algo, model)
            assert row["n"] == "2" and row["n_failed"] == "0"
            assert float(row["error_mean"]) == pytest.approx(statistics.mean(final_errors), abs=1e-4)
            assert float(row["error_std"]) == pytest.approx(statistics.stdev(final_errors), abs=1e-4)

            best = []
            for seed in SEEDS:
                lines = (run_dir(out, algo, seed) / "metrics.jsonl").read_text().splitlines()
                metrics = [json.loads(line) for line in lines]
                best.append(min(metrics, key=lambda m: (m["val_error"][model], m["step"]))["test_error"][model])
            row = csv_row(out, "best_val", algo, model)
            assert float(row["error_mean"]) == pytest.approx(statistics.mean(best), abs=1e-4)
        wall = statistics.mean(f["wall_time_s"] for f in finals)
        assert float(csv_row(out, "final", algo, "student")["wall_time_mean_s"]) == pytest.approx(wall, abs=1e-4)

    sup = statistics.mean(
        json.loads((run_dir(out, "supervised", s) / "final.json").read_text())["test_error"]["student"] for s in SEEDS
    )
    teacher = statistics.mean(
        json.loads((run_dir(out, "mean_teacher", s) / "final.json").read_text())["test_error"]["teacher"] for s in SEEDS
    )
    gain = float(csv_row(out, "final", "mean_teacher", "teacher")["gain_over_supervised"])
    assert gain == pytest.approx(sup - teacher, abs=1e-4)
    # The terminal table is the same table.
    assert "Final model" in result.stdout and "Best validation" in result.stdout
    assert f"{sup:.2f}" in result.stdout
    assert (out / "report.md").read_text().count("| digits | 50 |") == 4


def test_compare_gives_every_algorithm_the_same_split_and_flags(compared) -> None:
    out, _ = compared
    for seed in SEEDS:
        splits = [json.loads((run_dir(out, a, seed) / "split.json").read_text()) for a in ALGOS]
        assert splits[0]["labeled"] == splits[1]["labeled"] and splits[0]["val"] == splits[1]["val"]
        configs = [json.loads((run_dir(out, a, seed) / "config.json").read_text()) for a in ALGOS]
        shared = {k for k in configs[0] if k not in ("algo", "out", "hparams")}
        assert {k: configs[0][k] for k in shared} == {k: configs[1].get(k) for k in shared}
        assert configs[0]["steps"] == 20 and configs[0]["eval_every"] == 10
        # One thread per run whatever --jobs is: CPU results depend on the thread count.
        assert configs[0]["threads"] == configs[1]["threads"] == 1
    assert "runs use different splits" not in (out / "report.md").read_text()


def test_rerun_reuses_finished_runs_and_completes_an_interrupted_one(compared, tmp_path: Path, capsys) -> None:
    source, result = compared
    assert result.returncode == 0, result.stderr
    out = tmp_path / "runs"
    shutil.copytree(source, out)
    interrupted = run_dir(out, "mean_teacher", 1)
    (interrupted / "final.json").unlink()
    finished = [run_dir(out, a, s) / "final.json" for a in ALGOS for s in SEEDS if (a, s) != ("mean_teacher", 1)]
    before = {path: path.stat().st_mtime_ns for path in finished}

    assert cli_main(compare_args(out)) == 0
    err = capsys.readouterr().err
    assert "3 finished already (reused), 1 to run" in err
    assert {path: path.stat().st_mtime_ns for path in finished} == before
    assert (interrupted / "final.json").exists()
    log = (out / "logs" / "digits-50" / "mean_teacher" / "seed1.log").read_text()
    assert "--resume" in log.splitlines()[0]
    assert csv_row(out, "final", "mean_teacher", "teacher")["n"] == "2"


def test_rerun_with_a_different_budget_refuses_to_reuse_finished_runs(compared, tmp_path: Path, capsys) -> None:
    source, _ = compared
    out = tmp_path / "runs"
    shutil.copytree(source, out)
    args = compare_args(out)
    args[args.index("--steps") + 1] = "30"
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "finished with a different config (" in err and "steps: 20 then, 30 now" in err


def test_failing_run_shows_as_failed_while_the_others_finish(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sweep"
    # digits has 1238 training images after validation: 5000 labels fails when the run loads the data.
    code = cli_main(
        [
            "sweep",
            "--algo",
            "supervised",
            "--dataset",
            "digits",
            "--grid",
            "labels=50,5000",
            "--seeds",
            "0",
            "--jobs",
            "2",
            "--out",
            str(out),
            *RUN_FLAGS,
        ]
    )
    assert code == 1
    captured = capsys.readouterr()
    error = json.loads((out / "digits-5000" / "supervised" / "seed0" / "error.json").read_text())
    assert error["exit_code"] == 2
    assert "--labels 5000" in error["error"] and "--labels 5000" in error["stderr_tail"]
    assert (out / "digits-50" / "supervised" / "seed0" / "final.json").exists()
    assert "failed: digits-5000/supervised/seed0" in captured.err
    report = (out / "report.md").read_text()
    assert "| digits-5000/supervised/seed0 | failed | error: --labels 5000" in report
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["labels"], r["n"], r["n_failed"]) for r in rows if r["selection"] == "final"] == [
        ("50", "1", "0"),
        ("5000", "0", "1"),
    ]


def test_unknown_algorithm_is_refused_before_any_run(tmp_path: Path, capsys) -> None:
    out = tmp_path / "runs"
    args = compare_args(out)
    args[args.index("--algos") + 1] = "supervised,mean_teachr"
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "unknown algorithm 'mean_teachr'" in err and "mean_teacher" in err and "pi_model" in err
    assert not out.exists()


def test_bad_run_flag_is_refused_before_any_run(tmp_path: Path, capsys) -> None:
    out = tmp_path / "runs"
    assert cli_main(compare_args(out, "--set", "no_such_hyperparameter=1")) == 2
    err = capsys.readouterr().err
    assert "digits-50/supervised/seed0" in err and "no_such_hyperparameter" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("flag", "instead"), [("--seed", "--seeds"), ("--algo", "--algos"), ("--overwrite", "reused")]
)
def test_flags_set_per_run_are_refused(tmp_path: Path, capsys, flag: str, instead: str) -> None:
    extra = [flag] if flag == "--overwrite" else [flag, "3"]
    assert cli_main(compare_args(tmp_path / "runs", *extra)) == 2
    err = capsys.readouterr().err
    assert flag in err and instead in err


def test_sweep_grid_key_must_be_a_hyperparameter_of_the_algorithm(tmp_path: Path, capsys) -> None:
    code = cli_main(
        [
            "sweep",
            "--algo",
            "mean_teacher",
            "--dataset",
            "digits",
            "--labels",
            "50",
            "--grid",
            "ema_decy=0.9,0.99",
            "--out",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "ema_decy" in err and "ema_decay" in err and "backbone" in err


@pytest.mark.parametrize(("text", "message"), [("0,1,1", "twice"), ("0,x", "'x' is not an integer"), ("-1", ">= 0")])
def test_bad_seed_lists_are_refused(tmp_path: Path, capsys, text: str, message: str) -> None:
    args = compare_args(tmp_path / "runs")
    args[args.index("--seeds") + 1] = text
    assert cli_main(args) == 2
    assert message in capsys.readouterr().err
