"""``ssl-bench run`` and ``ssl-bench resume``: parse, resolve, hand the config to the runner, print."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ssl_toolkit.cli.parsing import add_config_flags, config_values
from ssl_toolkit.config import resolve_run_config
from ssl_toolkit.runner import RunResult, execute_run, resolve_for_resume, resume_run
from ssl_toolkit.settings import Role


def add_run_parser(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="train one model and write its run folder",
                              description="Train one model and write its run folder. Flags override --config, "
                                          "which overrides the preset, which overrides the data set's defaults.")
    add_config_flags(run)
    command = run.add_argument_group("command")
    command.add_argument("--config", help="JSON/YAML run config (a saved config.json reruns that run)")
    command.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    command.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    command.add_argument("--quiet", action="store_true", help="no progress bar and no progress lines")
    run.set_defaults(handler=cmd_run)

    resume = commands.add_parser(
        "resume", help="continue a run folder from its checkpoint",
        description="Continue a run folder from its checkpoint with its saved config. A new step budget and "
                    "execution settings may change; anything that defines the experiment may not.",
    )
    resume.add_argument("run_dir", help="the run folder (holds config.json and checkpoint.pt)")
    resume.add_argument("--steps", type=int, help="a new step budget (at least the checkpoint's step)")
    add_config_flags(resume, roles=[Role.EXECUTION], exclude=["out", "preset", "plugins"])
    resume.add_argument("--quiet", action="store_true", help="no progress bar and no progress lines")
    resume.set_defaults(handler=cmd_resume)


def cmd_run(args: argparse.Namespace) -> int:
    values = config_values(args)
    config = resolve_run_config(values, args.config)
    if args.resume and not args.config and (Path(config.out) / "config.json").is_file():
        config = resolve_for_resume(values, config.out)
    return report(execute_run(config, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet))


def cmd_resume(args: argparse.Namespace) -> int:
    changes = config_values(args)
    return report(resume_run(args.run_dir, quiet=args.quiet, **changes))


def report(result: RunResult) -> int:
    """Print how the run ended (rank 0 alone, under torchrun); returns its exit code."""
    if result.rank != 0:
        return result.exit_code
    if result.status == "complete":
        print_final_table(result.final, Console())
        note = rampup_note(Path(result.config.out) / "metrics.jsonl")
        if note:
            print(note)
        print(f"results in {result.config.out}")
    elif result.status == "already_complete":
        print(result.message)
    else:
        print(("error: " if result.status == "diverged" else "") + result.message, file=sys.stderr)
    return result.exit_code


def rampup_note(metrics_path: Path) -> str:
    """A warning when the consistency weight was still rising at the end: the run was too short for it."""
    try:
        weights = [json.loads(line).get("consistency_weight") for line in metrics_path.read_text().splitlines()]
    except (OSError, ValueError):
        return ""
    weights = [w for w in weights if isinstance(w, (int, float))]
    if len(weights) < 2 or not weights[-1] > weights[-2] * (1 + 1e-6):
        return ""
    return (f"note: the consistency weight was still ramping up at the last evaluation ({weights[-2]:.3g} -> "
            f"{weights[-1]:.3g}): the run ended before the unlabeled term reached full strength, so it shows less "
            f"of what the algorithm can do; give more --steps or a shorter --set consistency_rampup")


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
