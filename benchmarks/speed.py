"""Speed of the training loop, measured side by side in one process: ratios, not absolute times.

Usage:
    python benchmarks/speed.py                 # full (minutes on a CPU)
    python benchmarks/speed.py --quick         # a short CPU run
    python benchmarks/speed.py --device cuda --precision bf16 --compile   # on a GPU

Every figure is a ratio of two things timed in the same process, interleaved block by block (A, B,
A, B, ...) so that load from other processes falls on both, each the median over repeated blocks
after a warm-up:

- ``step_time_ratio``: each registered algorithm's train_step time over supervised's, same batch
  and backbone, for convnet_small on 28x28 grayscale and convnet13 on 32x32 RGB;
- ``engine_overhead``: supervised ``Trainer.train_step`` over a bare PyTorch loop written here
  (same model, batch, augmentation, optimizer; no engine);
- ``augment_speedup_vs_dataloader``: images/s of the trainer's batched two-view augmentation over a
  per-sample torchvision-transforms DataLoader making the same two views of the same images;
- ``ema_share_of_step``: the teacher update's share of a Mean Teacher step;
- ``peak_memory_ratio``: peak bytes allocated during a Mean Teacher step over a supervised step
  (torch.profiler's memory timeline on a CPU, the allocator's peak on CUDA);
- ``mean_teacher_step_breakdown``: the shares of a Mean Teacher step taken by the batch and its
  views, the teacher's forward pass, the EMA update and the rest (student and optimizer);
- ``cpu_speedup``: ``fmnist-cpu`` Mean Teacher steps/s now over the same steps at the commit before
  the performance work (``--base``, a checkout of it), each option combination timed against it.

Writes ``speed.json`` and ``speed.md`` (command, torch version, CPU model, threads) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ssl_toolkit.config import resolve_run_config  # noqa: E402
from ssl_toolkit.data.augment import AugmentConfig, ViewBuilder  # noqa: E402
from ssl_toolkit.ema import ema_update  # noqa: E402
from ssl_toolkit.losses import masked_cross_entropy  # noqa: E402
from ssl_toolkit.registry import list_algorithms  # noqa: E402
from ssl_toolkit.trainer import Trainer  # noqa: E402

TARGETS = {
    "step_time_ratio": {"mean_teacher": 1.35, "temporal_ensembling": 1.05, "pi_model": 2.05},
    "engine_overhead": 1.10,
    "augment_speedup_vs_dataloader": 10.0,
    "ema_share_of_step": 0.03,
    "peak_memory_ratio": 1.15,
}
# The commit before the performance work: cpu_speedup times the same steps on a checkout of it.
BASE_COMMIT = "b048c9f"


# -- timing ----------------------------------------------------------------------------------------


def interleaved(bodies: dict[str, Callable[[], None]], warmup: int, repeats: int, block: int,
                sync: Callable[[], None]) -> dict[str, float]:
    """Median seconds per call of each body, timed in alternating blocks after a warm-up."""
    for body in bodies.values():
        for _ in range(warmup):
            body()
    sync()
    times: dict[str, list[float]] = {name: [] for name in bodies}
    for _ in range(repeats):
        for name, body in bodies.items():
            start = time.perf_counter()
            for _ in range(block):
                body()
            sync()
            times[name].append((time.perf_counter() - start) / block)
    return {name: statistics.median(values) for name, values in times.items()}


def _sync_for(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


# -- set-ups ---------------------------------------------------------------------------------------


def random_npz(path: Path, n: int, channels: int, size: int) -> Path:
    """An npz data set of ``n`` random images (10 classes): speed does not depend on pixel values."""
    rng = np.random.default_rng(n)
    np.savez(path, x_train=rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8), y_train=np.arange(n) % 10,
             x_test=rng.integers(0, 256, (100, channels, size, size), dtype=np.uint8), y_test=np.arange(100) % 10)
    return path


def settings(args: argparse.Namespace, folder: Path) -> dict[str, dict]:
    """The two benchmark settings: convnet_small on Fashion-MNIST, convnet13 on 32x32 RGB."""
    execution = {"threads": args.threads, "device": args.device, "precision": args.precision,
                 "compile": args.compile, "channels_last": args.channels_last}
    fmnist = {"dataset": "fashion_mnist", "backbone": "convnet_small", "batch_size": 64, "labeled_batch_size": 16,
              "labels": 1000}
    if not (Path("/usr/share/datasets/fashion-mnist") / "train-images-idx3-ubyte.gz").exists():
        fmnist = {"dataset": "npz", "data_dir": str(random_npz(folder / "gray28.npz", 3000, 1, 28)),
                  "backbone": "convnet_small", "batch_size": 64, "labeled_batch_size": 16, "labels": 100,
                  "val_size": 100}
    big_batch = (100, 50) if args.device == "cuda" else (32, 16)
    rgb = {"dataset": "npz", "data_dir": str(random_npz(folder / "rgb32.npz", 2000, 3, 32)), "backbone": "convnet13",
           "labels": 500, "val_size": 100, "batch_size": big_batch[0], "labeled_batch_size": big_batch[1]}
    return {"convnet_small@28x28": {**fmnist, **execution}, "convnet13@32x32": {**rgb, **execution}}


def trainer_for(algo: str, values: dict, folder: Path, steps: int) -> Trainer:
    config = resolve_run_config({**values, "algo": algo, "steps": steps, "eval_every": steps,
                                 "out": str(folder / f"{algo}-{len(list(folder.iterdir()))}")})
    trainer = Trainer(config)
    trainer.algorithm.train()
    return trainer


def stepper(trainer: Trainer) -> Callable[[], None]:
    def body() -> None:
        trainer.train_step(trainer.step)
        trainer.step += 1

    return body


# -- the measurements --------------------------------------------------------------------------------


def step_time_ratios(args: argparse.Namespace, folder: Path, values: dict) -> dict[str, float]:
    steps = args.warmup + args.repeats * args.block + 10
    trainers = {algo: trainer_for(algo, values, folder, steps) for algo in list_algorithms()}
    times = interleaved({a: stepper(t) for a, t in trainers.items()}, args.warmup, args.repeats, args.block,
                        _sync_for(trainers["supervised"].device))
    return {algo: times[algo] / times["supervised"] for algo in trainers if algo != "supervised"}


def bare_loop(trainer: Trainer) -> Callable[[], None]:
    """Supervised training as a user would write it in plain PyTorch, on the trainer's own data."""
    import timm

    config, data = trainer.config, trainer.data
    model = timm.create_model(config.backbone, in_chans=data.pool.shape[1], num_classes=data.num_classes)
    model.to(trainer.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    generator = torch.Generator(device=trainer.device).manual_seed(0)
    views = ViewBuilder({"student": "weak"}, data.preprocess,
                        AugmentConfig(config.translate, config.flip, config.noise), generator)
    labeled = torch.as_tensor(trainer.data.split.labeled, device=trainer.device)
    unlabeled = torch.as_tensor(trainer.data.split.unlabeled, device=trainer.device)
    n_labeled = config.labeled_batch_size

    def body() -> None:
        rows = torch.cat([labeled[torch.randint(len(labeled), (n_labeled,), device=trainer.device)],
                          unlabeled[torch.randint(len(unlabeled), (config.batch_size - n_labeled,),
                                                  device=trainer.device)]])
        y = data.pool_labels[rows].clone()
        y[n_labeled:] = -1
        x = views(data.pool[rows])["student"]
        loss = masked_cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return body


def engine_overhead(args: argparse.Namespace, folder: Path, values: dict) -> float:
    steps = args.warmup + args.repeats * args.block + 10
    trainer = trainer_for("supervised", values, folder, steps)
    times = interleaved({"engine": stepper(trainer), "bare": bare_loop(trainer)}, args.warmup, args.repeats,
                        args.block, _sync_for(trainer.device))
    return times["engine"] / times["bare"]


def augment_speedup(args: argparse.Namespace, folder: Path, values: dict) -> float:
    """Two weak views of the same 256 images: batched on the device vs a per-sample DataLoader."""
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    trainer = trainer_for("mean_teacher", values, folder, 10)
    images = trainer.data.pool[:256]
    config = trainer.config
    mean = trainer.data.preprocess.mean.flatten().tolist()
    std = trainer.data.preprocess.std.flatten().tolist()
    one_view = transforms.Compose([
        transforms.ToPILImage(), transforms.RandomCrop(images.shape[-1], padding=config.translate,
                                                       padding_mode="reflect"),
        *([transforms.RandomHorizontalFlip()] if config.flip else []), transforms.ToTensor(),
        transforms.Normalize(mean, std), transforms.Lambda(lambda x: x + config.noise * torch.randn_like(x)),
    ])

    class TwoViews(Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int):
            image = images[i].cpu()
            return one_view(image), one_view(image)

    loader = DataLoader(TwoViews(), batch_size=len(images), num_workers=0)
    views = ViewBuilder({"student": "weak", "teacher": "weak"}, trainer.data.preprocess,
                        AugmentConfig(config.translate, config.flip, config.noise), trainer.augment_generator)
    times = interleaved({"batched": lambda: views(images), "dataloader": lambda: next(iter(loader))},
                        2, args.repeats, 1, _sync_for(trainer.device))
    return times["dataloader"] / times["batched"]


def ema_share(args: argparse.Namespace, folder: Path, values: dict) -> float:
    steps = args.warmup + args.repeats * args.block + 10
    trainer = trainer_for("mean_teacher", values, folder, steps)
    algorithm = trainer.algorithm
    times = interleaved({"step": stepper(trainer), "ema": lambda: ema_update(algorithm.teacher, algorithm.student,
                                                                            0.99)},
                        args.warmup, args.repeats, args.block, _sync_for(trainer.device))
    return times["ema"] / times["step"]


def step_breakdown(args: argparse.Namespace, folder: Path, values: dict) -> dict[str, float]:
    """Where a Mean Teacher step's time goes, as shares of the whole step (timed interleaved).

    ``batch``: sampling and both augmented views; ``teacher_forward``: the teacher's no-grad pass on
    its view; ``ema``: the teacher update; ``student_and_optimizer``: the rest (the student's forward
    and backward, the losses, the optimizer step). ``supervised_step``: a supervised step over the
    same Mean Teacher step, the cost floor of any method that trains the same student.
    """
    steps = args.warmup + args.repeats * args.block + 10
    trainer = trainer_for("mean_teacher", values, folder, steps)
    supervised = trainer_for("supervised", values, folder, steps)
    algorithm = trainer.algorithm
    batch = trainer.make_batch(0)
    times = interleaved({
        "step": stepper(trainer), "supervised_step": stepper(supervised),
        "batch": lambda: trainer.make_batch(trainer.step),
        "teacher_forward": lambda: algorithm.teacher_targets(batch, None),
        "ema": lambda: ema_update(algorithm.teacher, algorithm.student, 0.99),
    }, args.warmup, args.repeats, args.block, _sync_for(trainer.device))
    parts = {name: times[name] / times["step"] for name in ("batch", "teacher_forward", "ema")}
    parts["student_and_optimizer"] = 1.0 - sum(parts.values())
    parts["supervised_step"] = times["supervised_step"] / times["step"]
    return parts


def peak_step_bytes(trainer: Trainer) -> int:
    """Peak bytes allocated during one train_step, counting what existed before it."""
    step = stepper(trainer)
    step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    current = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action in (Action.PREEXISTING, Action.CREATE):
            current += size
        elif action == Action.DESTROY:
            current -= size
        peak = max(peak, current)
    return peak


def peak_memory_ratio(folder: Path, values: dict) -> float:
    return peak_step_bytes(trainer_for("mean_teacher", values, folder, 10)) / peak_step_bytes(
        trainer_for("supervised", values, folder, 10))


BASE_TIMER = """
import importlib.util, os, sys, time, statistics, json, torch
# The editable install maps ssl_toolkit.algorithms to this repository's algorithms/ whatever
# PYTHONPATH says; drop its finder so the checkout in the working folder is timed, all of it.
sys.meta_path = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
here = os.path.join(os.getcwd(), "algorithms")
class CheckoutAlgorithms:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "ssl_toolkit.algorithms":
            return importlib.util.spec_from_file_location(name, os.path.join(here, "__init__.py"),
                                                          submodule_search_locations=[here])
        return None
sys.meta_path.insert(0, CheckoutAlgorithms)
from ssl_toolkit.config import resolve_run_config
from ssl_toolkit.trainer import Trainer
values = json.loads(sys.argv[1]); warmup, repeats, block = map(int, sys.argv[2:5])
trainer = Trainer(resolve_run_config(values))
trainer.algorithm.train()
step = 0
for _ in range(warmup):
    trainer.train_step(step); step += 1
times = []
for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(block):
        trainer.train_step(step); step += 1
    times.append((time.perf_counter() - start) / block)
print(json.dumps(statistics.median(times)))
"""


def time_checkout(checkout: Path, values: dict, args: argparse.Namespace) -> float:
    """Median seconds per Mean Teacher step of the checkout at ``checkout``, in its own process."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": str(args.threads)}
    result = subprocess.run([sys.executable, "-c", BASE_TIMER, json.dumps(values), str(args.warmup),
                             str(max(2, args.repeats // 2)), str(args.block)],
                            cwd=checkout, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def cpu_speedup(args: argparse.Namespace, folder: Path) -> dict[str, float]:
    """fmnist-cpu Mean Teacher: seconds per step of the base checkout over this one, per option set.

    Base and current alternate run by run (B, C, B, C), each in its own process, so both see the
    same load; the ratio of medians is reported.
    """
    steps = args.warmup + args.repeats * args.block + 10
    common = {"algo": "mean_teacher", "dataset": "fashion_mnist", "threads": args.threads, "device": "cpu",
              "steps": max(steps, 1000), "eval_every": max(steps, 1000)}
    channels_last = {"channels_last": True}
    options = {"fp32": {}, "channels_last": channels_last, "bf16": {"precision": "bf16"},
               "bf16+channels_last": {"precision": "bf16", **channels_last}, "compile": {"compile": True},
               "compile+channels_last": {"compile": True, **channels_last}}
    if args.quick:
        options = {name: options[name] for name in ("fp32", "channels_last", "bf16+channels_last")}
    base_times, times = [], {name: [] for name in options}
    for _ in range(args.rounds):
        base_times.append(time_checkout(args.base, {**common, "out": str(folder / "base")}, args))
        for name, extra in options.items():
            times[name].append(time_checkout(REPO, {**common, **extra, "out": str(folder / name)}, args))
    base = statistics.median(base_times)
    return {name: base / statistics.median(values) for name, values in times.items()}


# -- output ------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown(result: dict) -> str:
    lines = ["# Training-loop speed (ratios measured in one run)", "", f"Command: `{result['command']}`", "",
             f"torch {result['torch']}, {result['device_name']}, {result['threads']} thread(s), "
             f"precision {result['precision']}, compile {result['compile']}, channels_last {result['channels_last']}",
             "", "| figure | setting | value | target | met |", "|---|---|---:|---:|---|"]
    for setting, ratios in result["step_time_ratio"].items():
        for algo, value in ratios.items():
            target = TARGETS["step_time_ratio"].get(algo)
            lines.append(_row(f"step_time_ratio {algo}", setting, value, target, lower=True))
    for key in ("engine_overhead", "ema_share_of_step", "peak_memory_ratio"):
        lines.append(_row(key, result["main_setting"], result[key], TARGETS[key], lower=True))
    lines.append(_row("augment_speedup_vs_dataloader", result["main_setting"], result["augment_speedup_vs_dataloader"],
                      TARGETS["augment_speedup_vs_dataloader"], lower=False))
    for part, share in (result.get("mean_teacher_step_breakdown") or {}).items():
        lines.append(_row(f"mean_teacher step share: {part}", result["main_setting"], share, None, lower=True))
    for name, value in (result.get("cpu_speedup") or {}).items():
        lines.append(_row(f"cpu_speedup ({name})", "fmnist-cpu mean_teacher", value, None, lower=False))
    return "\n".join(lines) + "\n"


def _row(name: str, setting: str, value: float, target: float | None, lower: bool) -> str:
    met = "—" if target is None else ("yes" if (value <= target if lower else value >= target) else "no")
    shown = "—" if target is None else (f"≤ {target}" if lower else f"≥ {target}")
    return f"| {name} | {setting} | {value:.3f} | {shown} | {met} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps (a short CPU run)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--base", type=Path, default=None,
                        help=f"a checkout of the commit before the performance work ({BASE_COMMIT}) for cpu_speedup")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.warmup, args.repeats, args.block, args.rounds = (3, 5, 5, 2) if args.quick else (10, 11, 10, 3)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs = folder / "runs"
        runs.mkdir()
        by_setting = settings(args, folder)
        main_setting = "convnet_small@28x28"
        result = {
            "command": " ".join(["python", "benchmarks/speed.py", *sys.argv[1:]]),
            "torch": torch.__version__, "threads": args.threads, "precision": args.precision,
            "compile": args.compile, "channels_last": args.channels_last, "main_setting": main_setting,
            "device_name": torch.cuda.get_device_name() if args.device == "cuda" else cpu_model(),
        }
        # Each figure is saved as soon as it is measured: a long run that fails late keeps the others.
        steps = {
            "step_time_ratio": lambda: {name: step_time_ratios(args, runs, values) for name, values in
                                        by_setting.items()},
            "engine_overhead": lambda: engine_overhead(args, runs, by_setting[main_setting]),
            "augment_speedup_vs_dataloader": lambda: augment_speedup(args, runs, by_setting[main_setting]),
            "ema_share_of_step": lambda: ema_share(args, runs, by_setting[main_setting]),
            "peak_memory_ratio": lambda: peak_memory_ratio(runs, by_setting[main_setting]),
            "mean_teacher_step_breakdown": lambda: step_breakdown(args, runs, by_setting[main_setting]),
        }
        if args.base is not None and args.device == "cpu":
            steps["cpu_speedup"] = lambda: cpu_speedup(args, runs)
        for key, measure in steps.items():
            result[key] = measure()
            write(result, args)
    print(markdown(result))


def write(result: dict, args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.device == "cpu" else f"-{args.device}-{args.precision}{'-compile' if args.compile else ''}"
    (args.out / f"speed{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    if "peak_memory_ratio" in result:
        (args.out / f"speed{suffix}.md").write_text(markdown(result))


if __name__ == "__main__":
    main()
