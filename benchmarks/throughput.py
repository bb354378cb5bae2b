"""Training throughput of every algorithm relative to supervised, measured in one process.

Usage: python benchmarks/throughput.py [--dataset digits] [--steps 200] [--threads 1] [--device auto]

Prints steps/s per algorithm and its cost ratio over supervised. Temporal Ensembling should cost
about the same as supervised (one pass), Mean Teacher about 1.5x (one extra forward without
backward), the Pi-model about 2x (two passes with backward).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ssl_toolkit.config import resolve_run_config
from ssl_toolkit.registry import list_algorithms
from ssl_toolkit.trainer import Trainer


def steps_per_second(algo: str, args: argparse.Namespace, folder: Path) -> float:
    config = resolve_run_config(
        {"algo": algo, "dataset": args.dataset, "steps": args.steps + args.warmup, "threads": args.threads,
         "device": args.device, "out": str(folder / algo), "data_dir": args.data_dir}
    )
    trainer = Trainer(config)
    trainer.algorithm.train()
    for step in range(args.warmup):
        trainer.train_step(step)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(args.warmup, args.warmup + args.steps):
        trainer.train_step(step)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--algos", default=",".join(list_algorithms()))
    args = parser.parse_args()
    algos = args.algos.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        rates = {algo: steps_per_second(algo, args, Path(tmp)) for algo in algos}
    base = rates.get("supervised")
    print(f"dataset={args.dataset} steps={args.steps} threads={args.threads} torch={torch.__version__}")
    print(f"{'algorithm':<22}{'steps/s':>10}{'cost vs supervised':>22}")
    for algo, rate in rates.items():
        ratio = f"{base / rate:.2f}x" if base else "-"
        print(f"{algo:<22}{rate:>10.1f}{ratio:>22}")


if __name__ == "__main__":
    main()
