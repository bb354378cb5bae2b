"""Checkpoint size and write time of Mean Teacher on ConvNet-13 (student + EMA teacher + Adam state).

Builds a real Trainer (CIFAR-shaped random images through the npz reader, so no download is
needed), takes optimizer steps so Adam's moments exist, then times ``Trainer.save_checkpoint``: the
same code path as a run, i.e. torch.save to memory, write to a temporary file, fsync, rename.

    .venv/bin/python benchmarks/checkpoint_size.py [--repeats 5] [--dir FOLDER]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ssl_toolkit.checkpoint import load_checkpoint, tensors_in
from ssl_toolkit.config import resolve_run_config
from ssl_toolkit.trainer import Trainer


def write_cifar_shaped_npz(path: Path, n_train: int = 400, n_test: int = 100) -> None:
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8),
        y_train=np.arange(n_train) % 10,
        x_test=rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8),
        y_test=np.arange(n_test) % 10,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backbone", default="convnet13")
    parser.add_argument("--dir", default=None, help="where to write the checkpoints (default: the temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        data = Path(tmp) / "cifar_shaped.npz"
        write_cifar_shaped_npz(data)
        config = resolve_run_config({
            "algo": "mean_teacher", "dataset": "npz", "data_dir": str(data), "backbone": args.backbone,
            "labels": 100, "val_size": 0, "steps": 2, "batch_size": 100, "labeled_batch_size": 50,
            "eval_every": 2, "out": str(Path(tmp) / "run"), "device": "cpu",
        })
        trainer = Trainer(config)
        trainer.algorithm.train()
        for step in range(2):
            trainer.train_step(step)
            trainer.step += 1
        trainer.folder.path.mkdir(parents=True)
        student = sum(p.numel() for p in trainer.algorithm.student.parameters())
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            trainer.save_checkpoint(0.0)
            times.append(time.perf_counter() - started)
        size = trainer.folder.checkpoint.stat().st_size
        started = time.perf_counter()
        state = load_checkpoint(trainer.folder.checkpoint)
        load_time = time.perf_counter() - started
        parts = {
            key: sum(t.numel() * t.element_size() for t in tensors_in(state[key]))
            for key in ("algorithm", "optimizer", "rng")
        }
    print(f"backbone {args.backbone}, Mean Teacher, {student:,} student parameters")
    print(f"checkpoint size: {size:,} bytes ({size / 2**20:.1f} MiB)")
    for key, nbytes in parts.items():
        print(f"  {key:<10} {nbytes / 2**20:7.2f} MiB of tensors")
    print(
        f"write time (serialize + temp file + fsync + rename), {args.repeats} writes: median "
        f"{statistics.median(times) * 1000:.0f} ms, min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
    )
    print(f"load time (weights_only=True): {load_time * 1000:.0f} ms")
    machine = platform.processor() or platform.machine()
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, {machine}, "
        f"{torch.get_num_threads()} threads, folder {args.dir or tempfile.gettempdir()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
