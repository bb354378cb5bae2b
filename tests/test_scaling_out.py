"""Many runs on many devices: one GPU per job slot, ``--plan`` command lines, and the Ray backend."""

from __future__ import annotations

import csv
import itertools
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_toolkit.cli import main as cli_main
from ssl_toolkit.experiments import Execution, execute, launch, plan_compare
from ssl_toolkit.experiments.pool import slot_devices

RUN_FLAGS = ["--steps", "20", "--eval-every", "10"]
PLAN12 = ["compare", "--algos", "supervised,pi_model,temporal_ensembling,mean_teacher", "--dataset", "digits",
          "--labels", "50", "--seeds", "0,1,2", *RUN_FLAGS]

# Stands in for ``ssl-bench run``: records the environment and the time span it ran in, then writes
# the final.json that marks its run finished.
FAKE_RUN = """
import json, os, sys, time
plan, record = sys.argv[1], sys.argv[2]
config = json.load(open(plan))
start = time.time()
time.sleep(0.6)
env = {name: os.environ.get(name) for name in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")}
os.makedirs(config["out"], exist_ok=True)
json.dump({"env": env, "device": config["device"], "start": start, "end": time.time()}, open(record, "w"))
open(os.path.join(config["out"], "final.json"), "w").write("{}")
"""


def fake_run_command(run, root, extra=()):
    record = root / "records" / (run.name.replace("/", "_") + ".json")
    record.parent.mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-c", FAKE_RUN, str(run.plan_file(root)), str(record)]


def test_concurrent_runs_never_share_a_gpu_and_keep_their_configured_device(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(launch, "run_command", fake_run_command)
    runs = plan_compare(["supervised", "pi_model"], "digits", [50], [0, 1, 2], tmp_path, {"threads": 1})
    outcomes = execute(runs, tmp_path, Execution(gpus=["3", "5", "7"]))

    assert [outcome.status for outcome in outcomes] == ["done"] * 6
    records = [json.loads(path.read_text()) for path in (tmp_path / "records").iterdir()]
    assert len(records) == 6
    assert {record["env"]["CUDA_VISIBLE_DEVICES"] for record in records} <= {"3", "5", "7"}
    assert all(record["env"]["OMP_NUM_THREADS"] == "1" and record["device"] == "auto" for record in records)
    overlapping = [(a, b) for a, b in itertools.combinations(records, 2)
                   if a["start"] < b["end"] and b["start"] < a["end"]]
    # Three slots for six runs of 0.6 s: runs overlap, and those that do see different GPUs.
    assert overlapping
    assert all(a["env"]["CUDA_VISIBLE_DEVICES"] != b["env"]["CUDA_VISIBLE_DEVICES"] for a, b in overlapping)
    log = (tmp_path / "logs" / "digits-50" / "pi_model" / "seed0.log").read_text()
    assert log.startswith("$ OMP_NUM_THREADS=1 ") and "CUDA_VISIBLE_DEVICES=" in log.splitlines()[0]


def test_runs_see_every_gpu_when_no_gpus_are_given(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(launch, "run_command", fake_run_command)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    runs = plan_compare(["supervised"], "digits", [50], [0], tmp_path, {"threads": 2})
    (outcome,) = execute(runs, tmp_path, Execution())
    assert outcome.status == "done"
    (record,) = [json.loads(path.read_text()) for path in (tmp_path / "records").iterdir()]
    assert record["env"] == {"CUDA_VISIBLE_DEVICES": "0,1", "OMP_NUM_THREADS": "2"}


def test_more_slots_than_gpus_take_the_gpus_round_robin() -> None:
    assert slot_devices(5, ["2", "6"]) == ["2", "6", "2", "6", "2"]
    assert slot_devices(2, []) == [None, None]


@pytest.mark.parametrize(("execution", "slots"), [
    (Execution(gpus=["0", "1", "2", "3"]), 4),
    (Execution(), 1),
    (Execution(jobs=8, gpus=["0", "1"]), 8),
    (Execution(backend="ray"), None),
])
def test_jobs_default_to_one_per_gpu(execution: Execution, slots: int | None) -> None:
    assert execution.slots == slots


def test_gpus_all_means_every_gpu_this_process_may_use(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    execution = Execution(gpus=["all"])
    assert execution.gpus == ["4", "6"] and execution.slots == 2


@pytest.mark.parametrize(("extra", "message"), [
    (["--gpus", "0,1,0"], "names '0' twice"),
    (["--gpus", "cuda:0"], "'cuda:0' is not a GPU"),
    (["--gpus", "0,1", "--device", "cpu"], "--device cpu"),
    (["--plan", "--jobs", "2"], "--plan runs nothing, so --jobs"),
    (["--plan", "--gpus", "0"], "--plan runs nothing, so --gpus"),
    (["--jobs", "0"], "--jobs 0 must be a positive integer"),
])
def test_bad_execution_options_are_refused_before_anything_is_written(tmp_path: Path, capsys, extra: list[str],
                                                                       message: str) -> None:
    out = tmp_path / "runs"
    assert cli_main([*PLAN12, "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_ray_backend_without_ray_says_how_to_install_it(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes ``import ray`` fail as if it were not installed
    out = tmp_path / "runs"
    assert cli_main([*PLAN12, "--out", str(out), "--backend", "ray"]) == 2
    assert "pip install 'ssl-toolkit[ray]'" in capsys.readouterr().err
    assert not out.exists()


def test_ray_cluster_refuses_a_gpu_list_it_would_not_follow(tmp_path: Path, capsys, monkeypatch) -> None:
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # refused before any connection is tried
    out = tmp_path / "runs"
    assert cli_main([*PLAN12, "--out", str(out), "--backend", "ray", "--gpus", "0,1"]) == 2
    assert "a running Ray cluster assigns its own GPUs to the runs; give --gpus all" in capsys.readouterr().err
    assert not out.exists()


def plan_lines(out: Path, capsys) -> list[str]:
    assert cli_main([*PLAN12, "--out", str(out), "--plan"]) == 0
    return capsys.readouterr().out.splitlines()


def run_line(line: str, cwd: Path) -> None:
    result = subprocess.run(line, shell=True, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_plan_prints_a_runnable_line_per_unfinished_run(tmp_path: Path, capsys) -> None:
    out = tmp_path / "runs"
    lines = plan_lines(out, capsys)

    assert len(lines) == 12
    plans = [Path(shlex.split(line)[shlex.split(line).index("--config") + 1]) for line in lines]
    assert all(plan.is_absolute() and plan.is_file() for plan in plans)
    assert len(set(plans)) == 12
    assert all(line.startswith("OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ") for line in lines)
    assert not (out / "digits-50").exists()  # nothing ran

    # Run from another folder: every path in the line and its plan file is absolute.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_line(lines[3], elsewhere)
    finished = out / "digits-50" / "mean_teacher" / "seed0"
    assert json.loads((finished / "final.json").read_text())["steps"] == 20

    again = plan_lines(out, capsys)
    assert again == lines[:3] + lines[4:]
    # ``ssl-bench report`` collects what the lines wrote, and nothing of the plan files.
    assert cli_main(["report", str(out)]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {(row["algorithm"], row["n"]) for row in rows} == {("mean_teacher", "1")}

    # An interrupted run (checkpoint, no final.json) is printed with --resume, and that line completes it.
    (finished / "final.json").unlink()
    resumed = [line for line in plan_lines(out, capsys) if "mean_teacher/seed0.json" in line]
    assert resumed == [lines[3] + " --resume"]
    run_line(resumed[0], elsewhere)
    assert (finished / "final.json").exists()


def sweep_args(out: Path, *extra: str) -> list[str]:
    # labels=5000 fails when the run loads digits (too few images): both backends must record it alike.
    return ["sweep", "--algo", "supervised", "--dataset", "digits", "--grid", "labels=50,5000", "--seeds", "0",
            "--out", str(out), *RUN_FLAGS, *extra]


def results_without_times(out: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader((out / "results.csv").open()))
    return [{key: value for key, value in row.items() if "wall_time" not in key} for row in rows]


@pytest.fixture
def local_ray_shut_down_after():
    ray = pytest.importorskip("ray")
    yield
    ray.shutdown()  # the backend leaves the local Ray it started to later calls of the same process


def test_ray_backend_runs_the_pool_commands_to_the_same_results(tmp_path: Path, capsys,
                                                                 local_ray_shut_down_after) -> None:
    pool_out, ray_out = tmp_path / "pool", tmp_path / "ray"
    assert cli_main(sweep_args(pool_out, "--jobs", "2")) == 1
    # The backend starts a local Ray with two (fake) GPUs: Ray hands one to each run.
    assert cli_main(sweep_args(ray_out, "--backend", "ray", "--gpus", "3,5")) == 1
    err = capsys.readouterr().err
    assert "as Ray tasks" in err and "failed: digits-5000/supervised/seed0" in err

    done, failed = Path("digits-50/supervised/seed0"), Path("digits-5000/supervised/seed0")
    pool_final = json.loads((pool_out / done / "final.json").read_text())
    ray_final = json.loads((ray_out / done / "final.json").read_text())
    assert ray_final["test_error"] == pool_final["test_error"]
    header = (ray_out / "logs" / done.with_suffix(".log")).read_text().splitlines()[0]
    assert "CUDA_VISIBLE_DEVICES=3 " in header or "CUDA_VISIBLE_DEVICES=5 " in header
    pool_error = json.loads((pool_out / failed / "error.json").read_text())
    ray_error = json.loads((ray_out / failed / "error.json").read_text())
    assert ray_error["error"] == pool_error["error"] and ray_error["exit_code"] == pool_error["exit_code"] == 2
    assert results_without_times(ray_out) == results_without_times(pool_out)
