"""``ssl-bench tune``: the same search budget for every algorithm on validation, then fresh evaluation seeds."""

from __future__ import annotations

import argparse
from pathlib import Path

from ssl_toolkit.cli.experiments import (
    PER_RUN,
    REFUSED,
    _refuse,
    add_execution_options,
    execution_from_args,
    parse_algorithms,
    parse_ints,
)
from ssl_toolkit.cli.parsing import add_config_flags, config_values
from ssl_toolkit.errors import UserInputError

OPTUNA_MISSING = "ssl-bench tune needs Optuna: pip install 'ssl-toolkit[tune]' (or pip install optuna)"


def add_tune_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "tune", help="tune every algorithm with the same budget on validation, then evaluate on fresh seeds",
        description="Search each algorithm's hyperparameters with the same number of Optuna trials (the supervised "
                    "baseline included), score trials by validation error only, then train each algorithm's best "
                    "configuration on evaluation seeds that tuning never saw and report their test error "
                    "(docs/tuning.md). Rerunning the same command resumes a stopped tune. Every run setting flag "
                    "below applies to every run.",
    )
    own = parser.add_argument_group("tune")
    own.add_argument("--algos", required=True, help="comma list of algorithms (ssl-bench list algorithms)")
    own.add_argument("--dataset", required=True, help="data set name (ssl-bench list datasets)")
    own.add_argument("--labels", dest="label_list", required=True, help="comma list of label counts")
    own.add_argument("--space", action="append", default=[], metavar="KEY=SPEC",
                     help="search KEY over SPEC: log:A:B, uniform:A:B, int:A:B, choice:a,b or a,b; repeatable; "
                          "replaces the algorithm's default for KEY, for every algorithm that has KEY")
    own.add_argument("--trials", type=int, required=True, help="trials per algorithm and label count (the budget)")
    own.add_argument("--tune-seeds", default="0", help="comma list of seeds the trials run on")
    own.add_argument("--eval-seeds", default="1,2,3", help="comma list of fresh seeds the chosen configurations "
                     "run on (none may be a tuning seed)")
    own.add_argument("--sampler", choices=("tpe", "grid"), default="tpe",
                     help="Optuna's TPE, or a grid over choice-only spaces")
    own.add_argument("--sampler-seed", type=int, default=0, help="seed of the sampler (the same seed, the same tune)")
    own.add_argument("--out", dest="root", type=Path, default=None,
                     help="tune folder: tune.db, tune.json, trials/, eval/ and the report "
                          "(default: runs/tune-<dataset>)")
    own.add_argument("--config", help="JSON/YAML config applied to every run, beneath the flags")
    add_execution_options(parser)
    add_config_flags(parser, exclude=PER_RUN)
    _refuse(parser, {**REFUSED, "--seeds": "--tune-seeds and --eval-seeds", "--algo": "--algos"})
    parser.set_defaults(handler=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from ssl_toolkit.config import read_config_file
    from ssl_toolkit.experiments.search_space import build_spaces, fixed_keys, parse_space_options
    from ssl_toolkit.experiments.tune import TuneRequest, run_tune
    from ssl_toolkit.registry import load_plugins

    try:
        import optuna
    except ImportError:
        raise UserInputError(OPTUNA_MISSING) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    execution = execution_from_args(args)
    if execution.plan:
        raise UserInputError("tune --plan: a search chooses each trial from the ones before, so its runs cannot "
                             "be printed up front; run tune itself (with --backend ray for a cluster)")
    values = config_values(args)
    load_plugins(values.get("plugins") or [])
    algos = parse_algorithms("--algos", args.algos)
    labels = parse_ints("--labels", args.label_list, 1)
    tune_seeds = parse_ints("--tune-seeds", args.tune_seeds, 0)
    eval_seeds = parse_ints("--eval-seeds", args.eval_seeds, 0)
    file_values = read_config_file(args.config) if args.config else {}
    spaces = build_spaces(algos, parse_space_options(args.space), fixed_keys(values, file_values))
    request = TuneRequest(
        algos=algos, dataset=args.dataset, labels=labels, spaces=spaces, trials=args.trials, tune_seeds=tune_seeds,
        eval_seeds=eval_seeds, root=args.root or Path("runs") / f"tune-{args.dataset}", values=values,
        config_file=args.config, sampler=args.sampler, sampler_seed=args.sampler_seed, execution=execution,
    )
    return run_tune(request)
