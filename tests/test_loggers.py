"""Loggers: each one is read back with its own reader and must hold the numbers metrics.jsonl holds."""

from __future__ import annotations

import csv
import json
import math
import signal
import struct
import sys
import tempfile
from pathlib import Path

import pytest

from ssl_toolkit.cli import main
from ssl_toolkit.config.run_config import LOGGER_NAMES
from ssl_toolkit.loggers import OPTIONAL_PACKAGES, build_loggers
from ssl_toolkit.testing import tiny_run_flags
from ssl_toolkit.trainer import Trainer

# 8 steps, evaluations at 4 and 8, training scalars at 3 and 6.
RUN = [*tiny_run_flags(steps=8, eval_every=4), "--log-every", "3"]
STEP_TAGS = {"train/class_loss", "train/consistency_loss", "train/consistency_weight", "train/lr"}


def metrics_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def expected_evaluation_scalars(out: Path) -> dict[tuple[int, str], float]:
    """What every logger must hold for the evaluations, derived from metrics.jsonl."""
    expected = {}
    for row in metrics_rows(out):
        step = row["step"]
        expected[(step, "train/mean_class_loss")] = row["class_loss"]
        expected[(step, "train/mean_consistency_loss")] = row["consistency_loss"]
        for model in row["test_error"]:
            expected[(step, f"test_error/{model}")] = row["test_error"][model]
            expected[(step, f"val_error/{model}")] = row["val_error"][model]
    return expected


def read_csv(out: Path) -> dict[tuple[int, str], float]:
    with (out / "logs" / "scalars.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    scalars = {(int(r["step"]), r["tag"]): float(r["value"]) for r in rows}
    assert len(scalars) == len(rows), "each (step, tag) is logged once"
    return scalars


def test_csv_logger_holds_the_step_scalars_and_every_evaluation(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--algo", "mean_teacher", *RUN, "--out", str(out), "--logger", "csv"]) == 0
    scalars = read_csv(out)
    evaluations = expected_evaluation_scalars(out)
    for key, value in evaluations.items():
        assert scalars[key] == value, key
    step_keys = {key for key in scalars if key not in evaluations}
    assert step_keys == {(step, tag) for step in (3, 6) for tag in STEP_TAGS}
    assert scalars[(6, "train/lr")] > 0 and math.isfinite(scalars[(3, "train/class_loss")])


def test_csv_logger_of_a_resumed_run_logs_each_step_once(tmp_path, monkeypatch):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["run", "--algo", "pi_model", *RUN, "--out", str(straight), "--logger", "csv"]) == 0
    original = Trainer.train_step

    def stop_after_step_5(self, step):
        values = original(self, step)
        if step == 4:
            signal.raise_signal(signal.SIGTERM)  # the run finishes step 5, checkpoints it and stops
        return values

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_step", stop_after_step_5)
        assert main(["run", "--algo", "pi_model", *RUN, "--out", str(resumed), "--logger", "csv"]) == 143
    # A row after the checkpoint (a killed run's leftover) must not survive the resume.
    with (resumed / "logs" / "scalars.csv").open("a") as handle:
        handle.write("6,train/class_loss,99.0\n")
    assert main(["resume", str(resumed), "--quiet"]) == 0
    assert read_csv(resumed) == read_csv(straight)


def test_tensorboard_event_file_holds_the_logged_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["run", "--algo", "mean_teacher", *RUN, "--out", str(out), "--logger", "tensorboard"]) == 0
    events = list((out / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0]), size_guidance={"scalars": 0})
    accumulator.Reload()
    scalars = {(event.step, tag): event.value for tag in accumulator.Tags()["scalars"]
               for event in accumulator.Scalars(tag)}
    for key, value in expected_evaluation_scalars(out).items():
        assert scalars[key] == pytest.approx(value, rel=1e-6), key  # TensorBoard stores float32
    assert {tag for step, tag in scalars if step in (3, 6)} == STEP_TAGS


def read_wandb_history(path: Path) -> list[dict]:
    """The history records of a W&B transaction log (``run-<id>.wandb``).

    The file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then
    32 KiB blocks of records, each with a header (CRC32, length, type: 1 full, 2 first, 3 middle,
    4 last) and a piece of a serialized ``Record`` protobuf.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0)
    block, position, pieces, history = 32768, 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0 and length == 0:
            break
        pieces += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            if record.WhichOneof("record_type") == "history":
                history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.history.item})
    return history


def test_wandb_offline_run_history_holds_the_logged_scalars(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for variable in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_RUN_ID"):
        monkeypatch.delenv(variable, raising=False)
    # W&B's own caches and scratch folders go to the test's folder, not the home and temp folders.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for variable in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR", "TMPDIR"):
        monkeypatch.setenv(variable, str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "run"
    assert main(["run", "--algo", "mean_teacher", *RUN, "--out", str(out), "--logger", "wandb"]) == 0
    logs = list((out / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1, "one offline run, under the run folder"
    history = read_wandb_history(logs[0])
    scalars = {(row["_step"], tag): value for row in history for tag, value in row.items() if not tag.startswith("_")}
    for key, value in expected_evaluation_scalars(out).items():
        assert scalars[key] == value, key
    assert {tag for step, tag in scalars if step in (3, 6)} == STEP_TAGS


@pytest.mark.parametrize("logger", sorted(OPTIONAL_PACKAGES))
def test_missing_logger_package_is_one_line_naming_the_extra_before_anything_is_written(
    tmp_path, capsys, monkeypatch, logger
):
    module, extra = OPTIONAL_PACKAGES[logger]
    monkeypatch.setitem(sys.modules, module, None)  # makes "import <module>" fail as if not installed
    out = tmp_path / "run"
    assert main(["run", "--algo", "supervised", *RUN, "--out", str(out), "--logger", logger]) == 2
    err = capsys.readouterr().err
    assert f"pip install 'ssl-toolkit[{extra}]'" in err and err.count("\n") == 1
    assert not out.exists()


def test_unknown_logger_in_a_config_file_is_refused(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("loggers: [tensorbord]\n")
    out = tmp_path / "run"
    assert main(["run", "--algo", "supervised", *RUN, "--config", str(config), "--out", str(out)]) == 2
    assert "--logger 'tensorbord' is not valid; valid: csv, tensorboard, wandb" in capsys.readouterr().err
    assert not out.exists()


def test_every_declared_logger_can_be_built(tmp_path):
    from ssl_toolkit.config import resolve_run_config

    config = resolve_run_config({"out": str(tmp_path), "loggers": list(LOGGER_NAMES) + ["csv"]})
    assert [type(logger).__name__ for logger in build_loggers(config)] == [
        "CSVLogger", "TensorBoardLogger", "WandbLogger",
    ]


def test_overwrite_removes_the_old_logs(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--algo", "supervised", *RUN, "--out", str(out), "--logger", "csv"]) == 0
    (out / "logs" / "mine.txt").write_text("the user's own file")
    assert main(["run", "--algo", "supervised", *RUN, "--out", str(out), "--overwrite"]) == 0
    assert not (out / "logs" / "scalars.csv").exists()
    assert (out / "logs" / "mine.txt").exists()
