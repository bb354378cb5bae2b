"""Exact resume: a run stopped any way (SIGKILL, SIGINT, SIGTERM, a crash between writes) and resumed
ends bit-identical to an uninterrupted run; divergence and malicious checkpoints are handled safely."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from official_format_files import _RunsCommand

import ssl_toolkit.trainer as trainer_module
from ssl_toolkit.cli import main
from ssl_toolkit.observers import RunObserver
from ssl_toolkit.registry import list_algorithms
from ssl_toolkit.testing import tiny_trainer
from ssl_toolkit.trainer import Trainer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
# The subprocess runs: evaluations every 10 steps, checkpoints every 7, so a kill often lands
# after a metrics row that the newest checkpoint does not hold yet.
KILL_RUN = [
    "--algo", "mean_teacher", "--dataset", "digits", "--labels", "50", "--steps", "60", "--eval-every", "10",
    "--checkpoint-every", "7", "--batch-size", "32", "--labeled-batch-size", "8", "--threads", "1", "--quiet",
]


def outcome(folder: Path) -> tuple[str, dict]:
    """metrics.jsonl's bytes and final.json without its wall time."""
    final = json.loads((folder / "final.json").read_text())
    final.pop("wall_time_s")
    return (folder / "metrics.jsonl").read_text(), final


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def checkpoint_step(folder: Path) -> int:
    return torch.load(folder / "checkpoint.pt", weights_only=True)["step"]


@pytest.fixture(autouse=True)
def _sigint_not_ignored():
    """A test run as a background job inherits an ignored SIGINT, which ssl-bench rightly leaves
    ignored; these tests are about a SIGINT that reaches the run, so they start from the default."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run that every interrupted one must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(["run", *KILL_RUN, "--out", str(out)]) == 0
    return out


def start(out: Path) -> subprocess.Popen:
    """``ssl-bench run`` in a subprocess; returns once its first checkpoint exists."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "ssl_toolkit", "run", *KILL_RUN, "--out", str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 90
    while not (out / "checkpoint.pt").exists():
        assert process.poll() is None, f"the run ended before its first checkpoint: {process.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint within 90 s"
        time.sleep(0.005)
    return process


def test_sigkill_at_a_random_moment_then_resume_is_bit_identical(tmp_path, reference, capsys):
    out = tmp_path / "run"
    process = start(out)
    # A seeded random moment that lands inside the run on a fast or a slow machine: after the
    # evaluation row of step 10 to 40 appears, plus a random fraction of a few steps.
    rng = random.Random(6)
    rows, delay = rng.randint(1, 4), rng.uniform(0.0, 0.05)
    while len(read_lines(out / "metrics.jsonl")) < rows:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.002)
    time.sleep(delay)
    process.kill()
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "final.json").exists(), "the run finished before the kill; the test proved nothing"
    killed_at = checkpoint_step(out)
    assert 7 <= killed_at < 60
    assert main(["resume", str(out), "--quiet"]) == 0, capsys.readouterr().err
    assert outcome(out) == outcome(reference)
    assert not list(out.glob(".*.tmp")), "temporary files of the killed run are cleared"


def test_sigint_from_outside_checkpoints_exits_130_and_says_how_to_resume(tmp_path, reference, capsys):
    out = tmp_path / "run"
    process = start(out)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    step = checkpoint_step(out)
    assert lines[0] == (
        f"stopped by SIGINT after step {step} (checkpoint written); continue with: ssl-bench resume {out}"
    )
    assert not (out / "final.json").exists()
    assert main(["resume", str(out), "--quiet"]) == 0, capsys.readouterr().err
    assert outcome(out) == outcome(reference)


def raise_signal_after(monkeypatch, steps: list[int], signum: int) -> None:
    """Deliver ``signum`` to this process right after each 0-based step in ``steps``."""
    original = Trainer.train_step

    def train_step(self, step):
        values = original(self, step)
        if step in steps:
            signal.raise_signal(signum)
        return values

    monkeypatch.setattr(Trainer, "train_step", train_step)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_finishes_the_step_writes_a_checkpoint_and_resume_matches(
    tmp_path, reference, monkeypatch, capsys, signum, code
):
    out = tmp_path / "run"
    handler_before = signal.getsignal(signum)
    with monkeypatch.context() as patch:
        raise_signal_after(patch, [11], signum)
        assert main(["run", *KILL_RUN, "--out", str(out)]) == code
    assert signal.getsignal(signum) is handler_before, "the previous handler is back"
    err = capsys.readouterr().err
    assert err == (
        f"stopped by {signal.Signals(signum).name} after step 12 (checkpoint written); "
        f"continue with: ssl-bench resume {out}\n"
    )
    assert checkpoint_step(out) == 12, "the step in progress finished and was checkpointed"
    assert main(["resume", str(out), "--quiet"]) == 0
    assert outcome(out) == outcome(reference)


def test_a_second_sigint_interrupts_at_once_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        # The first request would stop after step 9; the second, in the same step, means now.
        original = Trainer.train_step

        def train_step(self, step):
            values = original(self, step)
            if step == 8:
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)
            return values

        patch.setattr(Trainer, "train_step", train_step)
        assert main(["run", *KILL_RUN, "--out", str(out)]) == 130
    assert capsys.readouterr().err.startswith("interrupted;")
    assert checkpoint_step(out) == 7
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the handlers are restored"


class CopyFolderAt(RunObserver):
    """An observer that copies the run folder as a kill at the end of ``step`` would leave it."""

    def __init__(self, step: int, source: Path, target: Path) -> None:
        self.step, self.source, self.target = step, source, target

    def on_step(self, steps_done: int, values: dict) -> None:
        if steps_done == self.step:
            shutil.copytree(self.source, self.target)
            # A kill in the middle of an atomic write leaves its temporary file behind.
            (self.target / ".checkpoint.pt.killed.tmp").write_bytes(b"half a checkpoint")


@pytest.mark.parametrize("algo", list_algorithms())
def test_resume_after_a_crash_between_writes_restores_every_state_exactly(algo, tmp_path, capsys):
    # 120 unlabeled images per batch: an epoch ends every 11 steps, so Temporal Ensembling folds its
    # per-sample ensemble before the checkpoint of step 15 and again after the resume.
    options = {"steps": 24, "eval_every": 8, "checkpoint_every": 5, "batch_size": 128, "labeled_batch_size": 8}
    reference = tiny_trainer(algo, tmp_path / "reference", **options)
    # At step 16 metrics.jsonl holds the evaluation of step 16, the checkpoint only step 15.
    reference.run(observers=[CopyFolderAt(16, tmp_path / "reference", tmp_path / "crashed")])
    crashed = tmp_path / "crashed"
    assert checkpoint_step(crashed) == 15
    assert [json.loads(line)["step"] for line in (crashed / "metrics.jsonl").read_text().splitlines()] == [8, 16]

    assert main(["resume", str(crashed), "--quiet"]) == 0, capsys.readouterr().err
    assert outcome(crashed) == outcome(tmp_path / "reference")
    assert not list(crashed.glob(".*.tmp"))
    resumed = torch.load(crashed / "checkpoint.pt", weights_only=True)
    expected = reference.algorithm.state_dict()
    assert set(resumed["algorithm"]) == set(expected)
    for key, tensor in expected.items():  # student, teacher (BatchNorm buffers too), per-sample buffers
        assert torch.equal(resumed["algorithm"][key], tensor), f"{algo}: {key} differs after resume"
    optimizer = reference.optimizer.state_dict()
    for index, state in optimizer["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(resumed["optimizer"]["state"][index][name]), torch.as_tensor(value))
    assert torch.equal(resumed["rng"]["augment"], reference.augment_generator.get_state())
    assert torch.equal(resumed["rng"]["torch"], torch.get_rng_state())


def test_divergence_stops_with_one_line_keeps_the_checkpoint_and_metrics(tmp_path, reference, monkeypatch, capsys):
    out = tmp_path / "run"
    real_loss = trainer_module.masked_cross_entropy
    calls = []

    def loss_that_breaks_at_step_25(logits, y):
        calls.append(1)
        loss = real_loss(logits, y)
        return loss * float("nan") if len(calls) == 25 else loss

    monkeypatch.setattr(trainer_module, "masked_cross_entropy", loss_that_breaks_at_step_25)
    assert main(["run", *KILL_RUN, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: loss is not finite at step 25: class_loss=nan, consistency_loss=")
    assert "consistency_weight=" in err and "; kept the checkpoint of step 21 and metrics.jsonl in" in err
    assert json.loads((out / "error.json").read_text()) == {
        "error": err.split("error: ", 1)[1].split("; kept")[0], "step": 25, "checkpoint_step": 21,
    }
    assert checkpoint_step(out) == 21
    rows = (out / "metrics.jsonl").read_text().splitlines()
    reference_rows = (reference / "metrics.jsonl").read_text().splitlines()
    assert rows == reference_rows[:2], "the evaluations before the divergence, intact"
    assert not (out / "final.json").exists()


def test_a_malicious_checkpoint_is_refused_and_its_code_never_runs(tmp_path, reference, capsys):
    marker = tmp_path / "code-ran"
    payload = _RunsCommand(exec, f"open({str(marker)!r}, 'w').write('ran')")
    shutil.copytree(reference, tmp_path / "run")
    state = torch.load(reference / "checkpoint.pt", weights_only=True)
    state["metrics"] = payload
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    # Control: an unsafe load of this file really does run the code.
    torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert marker.read_text() == "ran"
    marker.unlink()

    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    assert main(["resume", str(tmp_path / "run"), "--steps", "70", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "checkpoint.pt cannot be loaded safely" in err and "Unsupported global: GLOBAL exec" in err
    assert not marker.exists(), "the checkpoint's code ran"
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_resume_with_a_larger_step_budget_continues_the_schedule(tmp_path, capsys):
    short = tmp_path / "short"
    assert main(["run", *KILL_RUN, "--steps", "20", "--out", str(short)]) == 0
    saved = json.loads((short / "config.json").read_text())
    assert main(["run", *KILL_RUN, "--steps", "30", "--out", str(short), "--resume"]) == 0, capsys.readouterr().err
    config = json.loads((short / "config.json").read_text())
    assert config["steps"] == 30 and checkpoint_step(short) == 30
    # The lr ramps were derived from the first budget; resuming keeps them instead of refusing.
    assert (config["lr_rampup"], config["lr_rampdown"]) == (saved["lr_rampup"], saved["lr_rampdown"])
    assert [json.loads(line)["step"] for line in (short / "metrics.jsonl").read_text().splitlines()] == [10, 20, 30]
