"""The ``ssl-bench`` command: run | resume | list | compare | sweep | report."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ssl_toolkit.config import CONFIG_KEYS, config_differences, parse_scalar, resolve_run_config
from ssl_toolkit.errors import UserInputError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserInputError(f"{self.prog}: {message}")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--algo", help="algorithm name (ssl-bench list algorithms)")
    add("--dataset", help="data set name (ssl-bench list datasets)")
    add("--labels", type=int, help="number of labeled training images (class-balanced)")
    add("--seed", type=int, help="seed of the split, the initialization and the augmentation")
    add("--steps", type=int, help="optimizer steps")
    add("--batch-size", type=int, help="images per batch, labeled + unlabeled")
    add("--labeled-batch-size", type=int, help="labeled images per batch")
    add("--backbone", help="network: ssl-bench list backbones, or any timm model name")
    add("--lr", type=float, help="maximum learning rate")
    add("--optimizer", help="adam or sgd")
    add("--lr-schedule", help="ramp (sigmoid ramp-up, exp ramp-down) or cosine")
    add("--weight-decay", type=float)
    add("--val-size", type=int, help="validation images held out of the training set (stratified)")
    add("--eval-every", type=int, help="evaluate every N steps")
    add("--checkpoint-every", type=int, help="write a checkpoint every N steps (default: --eval-every)")
    add("--data-dir", help="folder with the data set's official files")
    add("--out", help="run folder (default runs/<dataset>-<labels>/<algo>/seed<seed>)")
    add("--device", help="auto, cpu or cuda")
    add("--threads", type=int, help="CPU threads for torch")
    add(
        "--deterministic",
        action="store_true",
        default=None,
        help="GPU: deterministic kernels, so a run and its resumed copy match (slower; the CPU needs no flag)",
    )
    add("--translate", type=int, help="max random translation in pixels")
    add("--noise", type=float, help="std of Gaussian input noise")
    add("--flip", action=argparse.BooleanOptionalAction, default=None, help="random horizontal flips")
    add("--zca", action=argparse.BooleanOptionalAction, default=None, help="ZCA-whiten the inputs (paper, CIFAR)")
    add("--lr-rampup", type=int, help="lr ramp-up (ramp) or linear warm-up (cosine) steps")
    add("--lr-rampdown", type=int, help="lr ramp-down steps at the end (ramp) or the cosine's length (cosine)")
    add("--svhn-extra", action="store_true", default=None, help="SVHN: add extra_32x32.mat to the unlabeled pool")
    add("--image-size", type=int, help="imagefolder: resize every image to SIZE x SIZE")
    add("--max-unlabeled", type=int, help="STL-10: read at most N images of unlabeled_X.bin")
    add(
        "--unlabeled-pool",
        type=int,
        help="cap the unlabeled stream at N training images: the labeled ones plus a seeded random draw",
    )
    add("--preset", help="a shipped preset (ssl-bench list presets)")
    add("--plugin", dest="plugins", action="append", help="import MODULE to register more algorithms")
    add("--config", help="JSON/YAML run config (a saved config.json reruns that run)")
    add(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="algorithm hyperparameter, repeatable (ssl-bench list algorithms shows them)",
    )
    add("--overwrite", action="store_true", help="replace an existing run folder")
    add("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    add("--quiet", action="store_true", help="no progress bar")


def parse_sets(sets: list[str]) -> dict[str, Any]:
    hparams: dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserInputError(f"--set {item!r} is not KEY=VALUE (e.g. --set ema_decay=0.999)")
        hparams[key.strip()] = parse_scalar(value)
    return hparams


def cli_values(args: argparse.Namespace) -> dict[str, Any]:
    values = {key: getattr(args, key) for key in CONFIG_KEYS if getattr(args, key, None) is not None}
    hparams = parse_sets(args.sets)
    if hparams:
        values["hparams"] = hparams
    return values


RUN_FILES = ("config.json", "split.json", "metrics.jsonl", "checkpoint.pt", "final.json", "error.json")


def _check_folder(config, args: argparse.Namespace) -> bool:
    """Refuse what would destroy or mix up a run; True when ``--overwrite`` must clear the folder.

    Only reads: nothing is removed until the data, model and checkpoint have been checked too.
    """
    from ssl_toolkit.results import RunFolder

    folder = RunFolder(config.out)
    if folder.path.exists() and not folder.path.is_dir():
        raise UserInputError(f"--out {folder.path} is a file, not a folder; choose another --out")
    if args.resume and args.overwrite:
        raise UserInputError("--resume and --overwrite exclude each other: continue the run, or replace it")
    if args.resume:
        if not folder.config.exists():
            raise UserInputError(f"--resume: {folder.path} holds no run (no config.json); start it without --resume")
        try:
            saved = json.loads(folder.config.read_text())
        except (OSError, ValueError) as error:
            raise UserInputError(f"--resume: {folder.config} is not readable JSON ({error})") from None
        differing = config_differences(saved if isinstance(saved, dict) else {}, config.to_json())
        if differing:
            raise UserInputError(
                f"--resume: the config differs from the saved run in {', '.join(differing)}; "
                f"use the same flags, or start a new run with another --out"
            )
        if not folder.checkpoint.exists():
            raise UserInputError(f"--resume: no checkpoint in {folder.path}; rerun with --overwrite")
        return False
    if folder.exists():
        if not args.overwrite:
            raise UserInputError(
                f"run folder {folder.path} already exists; add --resume to continue it, "
                f"--overwrite to replace it, or choose another --out"
            )
        if not (folder.config.exists() or folder.error.exists()):
            raise UserInputError(
                f"--overwrite: {folder.path} is not a run folder (no config.json); refusing to delete it"
            )
        return True
    return False


def _clear_run_files(path: Path) -> None:
    """Remove the files a run writes (and temporary files of a killed one), nothing else: an
    ``--out`` that also holds the user's own files keeps them."""
    for name in RUN_FILES:
        (path / name).unlink(missing_ok=True)
    for stale in path.glob(".*.tmp"):
        stale.unlink()


def print_final_table(final: dict, console: Console) -> None:
    table = Table(title=f"{final['algo']} on {final['dataset']}, {final['labels']} labels, seed {final['seed']}")
    table.add_column("model")
    table.add_column("val error %", justify="right")
    table.add_column("test error %", justify="right")
    table.add_column("best-val test error %", justify="right")
    for model, test in final["test_error"].items():
        val = final["val_error"].get(model)
        best = final["best_val"].get(model, {})
        table.add_row(
            model,
            "-" if val is None else f"{val:.2f}",
            f"{test:.2f}",
            "-" if "test_error" not in best else f"{best['test_error']:.2f} (step {best['step']})",
        )
    console.print(table)
    console.print(f"{final['steps']} steps in {final['wall_time_s']:.1f} s")


def cmd_run(args: argparse.Namespace) -> int:
    from ssl_toolkit.progress import run_with_progress
    from ssl_toolkit.results import RunFolder, atomic_write_json
    from ssl_toolkit.signals import StopRequest
    from ssl_toolkit.trainer import DivergenceError, Trainer

    values = cli_values(args)
    config = resolve_run_config(values, args.config)
    saved_config = Path(config.out) / "config.json"
    if args.resume and not args.config and saved_config.is_file():
        # The saved run is the base layer and the flags given now go on top, so values derived
        # from the step budget (the lr ramps) keep their saved values when only --steps changes,
        # and any flag that does change the run shows up as a difference below.
        config = resolve_run_config({**values, "out": config.out}, str(saved_config))
    overwrite = _check_folder(config, args)
    # The data, split, hyperparameter ranges, model and checkpoint are all checked here, so bad
    # input is refused before any file is written or removed.
    trainer = Trainer(config, resume=args.resume)
    folder = RunFolder(config.out)
    if overwrite:
        _clear_run_files(folder.path)
    if args.resume and trainer.step >= config.steps and folder.final.exists():
        print(f"the run in {folder.path} is already complete ({trainer.step} steps); add --steps N to extend it")
        return 0
    stop = StopRequest()
    try:
        with stop.installed():
            final = run_with_progress(trainer, quiet=args.quiet, should_stop=stop)
    except DivergenceError as error:
        atomic_write_json(
            folder.error, {"error": str(error), "step": error.step, "checkpoint_step": trainer.checkpoint_step}
        )
        kept = [f"the checkpoint of step {trainer.checkpoint_step}"] if trainer.checkpoint_step else []
        kept += ["metrics.jsonl"] if folder.metrics.exists() else []
        print(
            f"error: {error}; kept {' and '.join(kept) or 'config.json and split.json'} in {folder.path} "
            f"(details in error.json)",
            file=sys.stderr,
        )
        return 1
    if not final:  # a signal ended the run early (one during the last step lets it complete)
        print(
            f"stopped by {stop.name} after step {trainer.step} (checkpoint written); "
            f"continue with: ssl-bench resume {folder.path}",
            file=sys.stderr,
        )
        return stop.exit_code
    folder.error.unlink(missing_ok=True)
    print_final_table(final, Console())
    print(f"results in {config.out}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from ssl_toolkit.results import RunFolder

    folder = RunFolder(args.run_dir)
    if not folder.config.exists():
        raise UserInputError(f"{folder.path} holds no run (no config.json)")
    run_args = argparse.Namespace(
        **{key: None for key in CONFIG_KEYS},
        sets=[],
        config=str(folder.config),
        resume=True,
        overwrite=False,
        quiet=args.quiet,
    )
    run_args.out = str(folder.path)
    if args.steps is not None:
        run_args.steps = args.steps
    return cmd_run(run_args)


def cmd_list(args: argparse.Namespace) -> int:
    from ssl_toolkit.backbones import list_backbones
    from ssl_toolkit.config import list_presets
    from ssl_toolkit.data.sources import get_dataset_spec, list_datasets
    from ssl_toolkit.registry import get_algorithm, list_algorithms

    console = Console()
    what = args.what
    if what in ("all", "algorithms"):
        table = Table(title="algorithms (--algo; hyperparameters with --set KEY=VALUE)")
        table.add_column("name")
        table.add_column("hyperparameters (default)")
        for name in list_algorithms():
            fields = dataclasses.fields(get_algorithm(name).Config)
            table.add_row(name, ", ".join(f"{f.name}={f.default!r}" for f in fields) or "-")
        console.print(table)
    if what in ("all", "datasets"):
        table = Table(title="data sets (--dataset)")
        for column in ("name", "description", "backbone", "default steps/batch/labeled"):
            table.add_column(column)
        for name in list_datasets():
            spec = get_dataset_spec(name)
            d = spec.run_defaults
            table.add_row(
                name,
                spec.description,
                spec.backbone,
                f"{d.get('steps')}/{d.get('batch_size')}/{d.get('labeled_batch_size')}",
            )
        console.print(table)
    if what in ("all", "backbones"):
        console.print("backbones (--backbone): " + ", ".join(list_backbones()) + ", or any timm model name")
    if what in ("all", "presets"):
        table = Table(title="presets (--preset)")
        for column in ("name", "paper row", "published error %", "description"):
            table.add_column(column)
        for name, preset in list_presets().items():
            table.add_row(
                name,
                str(preset.get("paper_row", "-")),
                str(preset.get("published_error", "-")),
                str(preset.get("description", "")),
            )
        console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="ssl-bench", description="Semi-supervised learning benchmark toolkit")
    commands = parser.add_subparsers(dest="command", parser_class=OneLineParser)
    run = commands.add_parser("run", help="train one model and write its run folder")
    _add_run_arguments(run)
    resume = commands.add_parser("resume", help="continue a run folder from its checkpoint")
    resume.add_argument("run_dir")
    resume.add_argument("--steps", type=int, help="a new step budget")
    resume.add_argument("--quiet", action="store_true")
    listing = commands.add_parser("list", help="algorithms, data sets, backbones, presets")
    listing.add_argument(
        "what", nargs="?", default="all", choices=["all", "algorithms", "datasets", "backbones", "presets"]
    )
    for name in ("compare", "sweep", "report"):
        commands.add_parser(name, help=f"see ssl-bench {name} --help", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in ("compare", "sweep", "report"):
            return _delegate(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 2
        return {"run": cmd_run, "resume": cmd_resume, "list": cmd_list}[args.command](args)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # A second Ctrl-C during a run, or one before training started: files already written stay.
        print("interrupted; every file written so far is complete (writes are atomic)", file=sys.stderr)
        return 130


def _delegate(command: str, argv: list[str]) -> int:
    if command == "report":
        from ssl_toolkit.report import main as report_main

        return report_main(argv)
    from ssl_toolkit import compare

    return compare.main(argv) if command == "compare" else compare.sweep_main(argv)


if __name__ == "__main__":
    sys.exit(main())
