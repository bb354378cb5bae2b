"""Which operators take the time of a train-mode, no-grad forward pass (the Mean Teacher teacher's).

Usage:
    python benchmarks/profile_forward.py                         # convnet_small, 64 images of 1x28x28
    python benchmarks/profile_forward.py --backbone convnet13 --channels 3 --size 32 --batch 32

Prints each operator's share of the profiled self CPU time (torch.profiler), largest first.
"""

from __future__ import annotations

import argparse

import timm
import torch
from torch.profiler import ProfilerActivity, profile

import ssl_toolkit.backbones  # noqa: F401  (registers the project's backbones with timm)


def operator_shares(backbone: str, channels: int, size: int, batch: int, repeats: int) -> list[tuple[str, float]]:
    model = timm.create_model(backbone, in_chans=channels, num_classes=10).train()
    images = torch.randn(batch, channels, size, size)
    with torch.no_grad():
        for _ in range(5):
            model(images)
        with profile(activities=[ProfilerActivity.CPU]) as profiled:
            for _ in range(repeats):
                model(images)
    events = profiled.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    return sorted(((event.key, event.self_cpu_time_total / total) for event in events), key=lambda kv: -kv[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="convnet_small")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.backbone}, batch {args.batch} of {args.channels}x{args.size}x{args.size}, {args.threads} thread(s)")
    for name, share in operator_shares(args.backbone, args.channels, args.size, args.batch, args.repeats)[:args.top]:
        print(f"{share:6.3f}  {name}")


if __name__ == "__main__":
    main()
