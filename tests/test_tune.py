"""``ssl-bench tune`` on digits: equal budgets, validation-only selection, resume after a kill, bad spaces."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from ssl_toolkit.cli import main as cli_main
from ssl_toolkit.config import resolve_run_config
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.experiments.execution import Execution
from ssl_toolkit.experiments.search_space import build_spaces, parse_space_options, parse_spec
from ssl_toolkit.experiments.tune import Tuner, TuneRequest, check_request
from ssl_toolkit.report import build_report

optuna = pytest.importorskip("optuna")

REPO = Path(__file__).resolve().parents[1]
ALGOS = ("supervised", "mean_teacher")
TRIALS = 2
RUN_FLAGS = ["--steps", "60", "--eval-every", "15", "--threads", "1"]


def tune_args(out: Path, algos: str = ",".join(ALGOS), trials: int = TRIALS, *extra: str) -> list[str]:
    return ["tune", "--algos", algos, "--dataset", "digits", "--labels", "50", "--trials", str(trials),
            "--tune-seeds", "0", "--eval-seeds", "1", "--out", str(out), *RUN_FLAGS, *extra]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its modification time and size: what a rerun would change."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def finished_trial_runs(out: Path) -> list[Path]:
    return sorted(p.parent for p in (out / "trials").rglob("final.json"))


def summary(out: Path) -> dict:
    return json.loads((out / "tune.json").read_text())


def in_flight_trial_runs(out: Path) -> list[Path]:
    """Trial runs with a checkpoint but no final.json: killed now, they must resume, not restart."""
    return sorted(p.parent for p in (out / "trials").rglob("checkpoint.pt") if not (p.parent / "final.json").exists())


def log_of(out: Path, run: Path) -> Path:
    return (out / "logs" / run.relative_to(out)).with_suffix(".log")


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory: pytest.TempPathFactory):
    """A real tune killed (SIGTERM) with a trial finished and another mid-run, then the same command to the end."""
    out = tmp_path_factory.mktemp("tune") / "tuned"
    process = subprocess.Popen([sys.executable, "-m", "ssl_toolkit", *tune_args(out)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 900
    while not (out / "trials").is_dir() or not (finished_trial_runs(out) and in_flight_trial_runs(out)):
        assert process.poll() is None, f"the tune ended before it was killed: {process.stderr.read()}"
        assert time.monotonic() < deadline, "no trial finished and another started within 15 minutes"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGTERM)
    _, kill_stderr = process.communicate(timeout=300)
    finished = {run: snapshot(run) for run in finished_trial_runs(out)}
    logs = {run: log_of(out, run).stat().st_mtime_ns for run in finished}
    interrupted = [run for run in in_flight_trial_runs(out) if run not in finished]
    resumed = cli_main(tune_args(out))
    return out, process.returncode, kill_stderr, finished, logs, interrupted, resumed


def test_a_killed_tune_resumes_without_rerunning_finished_trials(killed_and_resumed) -> None:
    out, killed_code, kill_stderr, finished, logs, interrupted, resumed = killed_and_resumed
    assert killed_code == 130, kill_stderr
    assert "rerun the same command to resume" in kill_stderr
    assert finished, "no trial had finished when the tune was killed"
    assert resumed == 0
    for run, files in finished.items():
        assert snapshot(run) == files, f"{run} was rerun after the kill"
        assert log_of(out, run).stat().st_mtime_ns == logs[run]
    # The trial stopped mid-run went on from its checkpoint.
    assert interrupted
    for run in interrupted:
        assert (run / "final.json").exists() and "--resume" in log_of(out, run).read_text()
    # The kill asked no extra trial: each study holds exactly the budget, numbered from 0.
    for study in summary(out)["studies"]:
        assert [trial["number"] for trial in study["trials"]] == list(range(TRIALS))


def test_every_algorithm_gets_the_same_number_of_trials(killed_and_resumed) -> None:
    out = killed_and_resumed[0]
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'tune.db'}")
    for algo in ALGOS:
        study = optuna.load_study(study_name=f"digits-50/{algo}", storage=storage)
        assert [t.state.name for t in study.get_trials()] == ["COMPLETE"] * TRIALS
        folders = sorted(p.name for p in (out / "trials" / "digits-50" / algo).iterdir())
        assert folders == [f"trial{k}" for k in range(TRIALS)]
    counts = {study["algo"]: sum(t["counted"] for t in study["trials"]) for study in summary(out)["studies"]}
    assert counts == dict.fromkeys(ALGOS, TRIALS)


def test_the_report_table_holds_only_the_evaluation_runs_with_the_chosen_hyperparameters(killed_and_resumed) -> None:
    out = killed_and_resumed[0]
    report = build_report(out)
    assert report.runs and all(run.path.startswith("eval/") for run in report.runs)
    chosen = {study["algo"]: study["best"] for study in summary(out)["studies"]}
    for row in report.rows:
        assert row.errors["student"].seeds == [1]
        best = chosen[row.algo]
        assert f"(trial {best['number']})" in row.tuned
        for key, value in best["params"].items():
            expected = f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
            assert expected in row.tuned
        eval_config = json.loads((out / "eval" / "digits-50" / row.algo / "seed1" / "config.json").read_text())
        for key, value in best["params"].items():
            assert {**eval_config, **eval_config["hparams"]}[key] == pytest.approx(value)
    assert {row.algo for row in report.rows} == set(ALGOS)
    assert "## Trials" in report.markdown and "## Tuning protocol" in report.markdown
    trials = list(csv.DictReader((out / "trials.csv").open()))
    assert len(trials) == TRIALS * len(ALGOS) and all("test" not in key for key in trials[0])


def test_rerunning_a_finished_tune_runs_nothing(killed_and_resumed, capsys) -> None:
    out = killed_and_resumed[0]
    before = {name: snapshot(out / name) for name in ("trials", "eval")}
    assert cli_main(tune_args(out)) == 0
    assert {name: snapshot(out / name) for name in ("trials", "eval")} == before
    assert "trials: 0 run now" in capsys.readouterr().err


def test_selection_never_reads_test_error(tmp_path: Path) -> None:
    # Trial 0 is planted: the best test error of all, the worst validation error. Both trials train
    # the same configuration (a one-point space), so only the scores can tell them apart.
    out = tmp_path / "tuned"
    planted = out / "trials" / "digits-50" / "supervised" / "trial0" / "seed0"
    config = resolve_run_config({"algo": "supervised", "dataset": "digits", "labels": 50, "seed": 0, "steps": 60,
                                 "eval_every": 15, "threads": 1, "lr": 0.003, "out": str(planted)})
    planted.mkdir(parents=True)
    (planted / "config.json").write_text(json.dumps(config.to_json()))
    rows = [{"step": step, "val_error": {"student": 90.0}, "test_error": {"student": 0.0}} for step in (15, 30, 45, 60)]
    (planted / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (planted / "final.json").write_text(json.dumps({"test_error": {"student": 0.0}, "val_error": {"student": 90.0}}))

    assert cli_main(tune_args(out, "supervised", 2, "--space", "lr=0.003")) == 0
    (study,) = summary(out)["studies"]
    scores = {trial["number"]: trial["val_score"] for trial in study["trials"]}
    assert scores[0] == 90.0 and scores[1] < 90.0
    assert study["best"]["number"] == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--space", "ema_dekay=log:0.9:0.99"], "--space ema_dekay: not a setting"),
        (["--space", "ema_decay=uniform:0.9:1"], "ema_decay=1.0 is out of range; valid: [0.0, 1.0)"),
        (["--space", "lr=log:0:0.1"], "needs A > 0"),
        (["--space", "lr=loguniform:1e-3:1e-2"], "is not a search spec"),
        (["--space", "lr"], "is not KEY=SPEC"),
        (["--space", "consistency_rampup=uniform:0:10"], "consistency_rampup takes whole numbers"),
        (["--lr", "0.01", "--space", "lr=log:1e-3:1e-2"], "clashes with the value given for lr"),
        (["--val-size", "0"], "tuning scores trials on a validation set"),
        (["--eval-seeds", "0,1"], "seed 0 is both a tuning and an evaluation seed"),
        (["--sampler", "grid"], "--sampler grid needs a choice for every searched setting"),
        (["--sampler", "grid", "--space", "lr=0.001,0.003", "--space", "consistency_weight=1,10",
          "--space", "ema_decay=0.99", "--space", "logit_distance_cost=0", "--trials", "3"],
         "the grid of supervised has 2 point(s), fewer than --trials 3"),
    ],
)
def test_a_bad_search_space_is_a_one_line_error_before_anything_runs(tmp_path: Path, capsys, extra, message) -> None:
    out = tmp_path / "tuned"
    assert cli_main(tune_args(out, ",".join(ALGOS), TRIALS, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_a_key_applies_only_to_the_algorithms_that_have_it() -> None:
    spaces = build_spaces(["supervised", "mean_teacher"], parse_space_options(["consistency_weight=1,10"]), set())
    assert spaces["supervised"].keys == ["lr"]
    assert spaces["mean_teacher"].describe()["consistency_weight"] == "1,10"
    assert dict(zip(spaces["mean_teacher"].keys, spaces["mean_teacher"].dimensions, strict=True))[
        "consistency_weight"].spec.values == (1.0, 10.0)


def test_specs_take_the_type_of_their_setting() -> None:
    space = build_spaces(["mean_teacher"], parse_space_options(
        ["consistency_rampup=int:0:100", "consistency_weight=null,10", "logit_distance_cost=0,0.01"]), set())
    dims = {dim.key: dim for dim in space["mean_teacher"].dimensions}
    assert isinstance(dims["consistency_rampup"].distribution(), optuna.distributions.IntDistribution)
    assert dims["consistency_weight"].spec.values == (None, 10.0)
    assert dims["logit_distance_cost"].spec.values == (0.0, 0.01)
    assert dims["lr"].spec.kind == "log" and dims["lr"].source == "default"
    with pytest.raises(UserInputError, match="needs A < B"):
        parse_spec("--space lr", "uniform:0.1:0.01")


def _tuner(root: Path, sampler: str, space: list[str], jobs: int) -> Tuner:
    spaces = build_spaces(list(ALGOS), parse_space_options(space), set())
    request = TuneRequest(algos=list(ALGOS), dataset="digits", labels=[50], spaces=spaces, trials=2,
                          tune_seeds=[0], eval_seeds=[1], root=root, values={"steps": 30, "threads": 1},
                          sampler=sampler, execution=Execution(jobs=jobs))
    root.mkdir(parents=True)
    tuner = Tuner(request, check_request(request), Console(file=io.StringIO()))
    tuner.open_studies()
    return tuner


def test_the_same_sampler_seed_asks_the_same_trials(tmp_path: Path) -> None:
    asked = []
    for name in ("first", "second"):
        batch = _tuner(tmp_path / name, "tpe", [], jobs=4).ask_round()
        asked.append([(study.algo, number, params) for study, number, params, _ in batch])
    assert asked[0] == asked[1] and len(asked[0]) == 2 * len(ALGOS)
    params = [params for _, _, params in asked[0]]
    assert params[0] != params[1]


def test_the_grid_sampler_gives_every_trial_its_own_grid_point(tmp_path: Path) -> None:
    space = ["lr=0.001,0.003", "consistency_weight=1,10", "ema_decay=0.99", "logit_distance_cost=0"]
    batch = _tuner(tmp_path / "grid", "grid", space, jobs=4).ask_round()
    by_algo: dict[str, list[dict]] = {}
    for study, _, params, runs in batch:
        by_algo.setdefault(study.algo, []).append(params)
        assert [run.config.lr for run in runs] == [params["lr"]]
    assert sorted(p["lr"] for p in by_algo["supervised"]) == [0.001, 0.003]
    assert len({json.dumps(p, sort_keys=True) for p in by_algo["mean_teacher"]}) == 2


def test_missing_optuna_is_a_one_line_error_naming_the_extra(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert cli_main(tune_args(tmp_path / "tuned")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ssl-toolkit[tune]" in err
    assert not (tmp_path / "tuned").exists()


def test_resuming_with_other_settings_is_refused(tmp_path: Path, capsys) -> None:
    root = tmp_path / "tuned"
    _tuner(root, "tpe", [], jobs=1)  # studies made with --steps 30
    assert cli_main(tune_args(root)) == 2  # --steps 60 now
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "made with other settings" in err and "steps: 30 then, 60 now" in err


def test_a_tune_folder_refuses_a_command_for_other_studies(tmp_path: Path, capsys) -> None:
    root = tmp_path / "tuned"
    _tuner(root, "tpe", [], jobs=1)
    assert cli_main(tune_args(root, "supervised", TRIALS, "--steps", "30")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "digits-50/mean_teacher, which this command does not ask for" in err
