"""Kill-and-resume trials: SIGKILL a CPU run at random moments, resume it, compare with a clean run.

Each trial starts ``ssl-bench run`` in a subprocess, waits until its first checkpoint exists, kills
it with SIGKILL after a random delay, resumes it with ``ssl-bench resume`` and compares the result
with an uninterrupted run of the same config: ``metrics.jsonl`` byte for byte, and the val/test
errors (and the validation-selected model) of ``final.json``. Prints one line per trial and a tally.

    .venv/bin/python benchmarks/kill_resume_trials.py --trials 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def run_args(algo: str, steps: int, out: Path) -> list[str]:
    # Evaluation (every 10) and checkpoints (every 7) fall on different steps on purpose, so a
    # kill often lands after a metrics row that the last checkpoint does not know about.
    return [
        sys.executable, "-m", "ssl_toolkit", "run", "--algo", algo, "--dataset", "digits", "--labels", "50",
        "--steps", str(steps), "--eval-every", "10", "--checkpoint-every", "7", "--batch-size", "32",
        "--labeled-batch-size", "8", "--threads", "1", "--quiet", "--out", str(out),
    ]


def outcome(folder: Path) -> tuple[bytes, dict]:
    final = json.loads((folder / "final.json").read_text())
    kept = {key: final[key] for key in ("test_error", "val_error", "best_val")}
    return (folder / "metrics.jsonl").read_bytes(), kept


def checkpoint_step(folder: Path) -> int:
    return int(torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)["step"])


def start_and_wait_for_checkpoint(args: list[str], out: Path, env: dict) -> subprocess.Popen:
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
    while not (out / "checkpoint.pt").exists():
        if process.poll() is not None:
            raise SystemExit(f"the run exited ({process.returncode}) before its first checkpoint: {' '.join(args)}")
        time.sleep(0.005)
    return process


def time_until_final(out: Path, process: subprocess.Popen) -> float:
    """Seconds from now (the first checkpoint) until final.json appears: the window a kill can hit."""
    started = time.perf_counter()
    while not (out / "final.json").exists() and process.poll() is None:
        time.sleep(0.005)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--algos", default="mean_teacher,temporal_ensembling,pi_model,supervised")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    algos = args.algos.split(",")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    identical = counted = 0
    with tempfile.TemporaryDirectory() as tmp:
        references: dict[str, tuple[bytes, dict]] = {}
        windows: dict[str, float] = {}
        for algo in algos:
            out = Path(tmp) / f"reference-{algo}"
            process = start_and_wait_for_checkpoint(run_args(algo, args.steps, out), out, env)
            windows[algo] = time_until_final(out, process)
            if process.wait() != 0:
                raise SystemExit(f"the uninterrupted {algo} run failed")
            references[algo] = outcome(out)
        for trial in range(args.trials):
            algo = algos[trial % len(algos)]
            for attempt in range(5):
                out = Path(tmp) / f"trial{trial}-{attempt}"
                process = start_and_wait_for_checkpoint(run_args(algo, args.steps, out), out, env)
                delay = rng.uniform(0.0, windows[algo])
                time.sleep(delay)
                process.send_signal(signal.SIGKILL)
                process.wait()
                if not (out / "final.json").exists():
                    break
                # The machine ran faster than when the window was measured: measure it again
                # on a fresh run and draw another moment.
                print(f"trial {trial} {algo}: finished before the kill (delay {delay:.2f} s); drawing again")
                shutil.rmtree(out)
                process = start_and_wait_for_checkpoint(run_args(algo, args.steps, out), out, env)
                windows[algo] = time_until_final(out, process)
                process.wait()
                shutil.rmtree(out)
            else:
                print(f"trial {trial} {algo}: no kill landed inside the run in 5 attempts; not counted")
                continue
            counted += 1
            resumed_from = checkpoint_step(out)
            resume = subprocess.run(
                [sys.executable, "-m", "ssl_toolkit", "resume", str(out), "--quiet"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            if resume.returncode != 0:
                print(f"trial {trial} {algo}: resume failed ({resume.returncode}): {resume.stderr.strip()}")
                continue
            same = outcome(out) == references[algo]
            identical += same
            print(
                f"trial {trial} {algo}: killed {delay:.2f} s after the first checkpoint, resumed from step "
                f"{resumed_from}: {'bit-identical' if same else 'DIFFERENT'}"
            )
    print(f"{identical} of {counted} killed-and-resumed trials ended bit-identical to the uninterrupted run")
    return 0 if identical == counted else 1


if __name__ == "__main__":
    sys.exit(main())
