"""``ssl-bench compare``, ``sweep`` and ``report``: many runs under one protocol, and their tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from ssl_toolkit.cli.parsing import add_config_flags, config_values
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.experiments.execution import BACKENDS, Execution
from ssl_toolkit.experiments.launch import ALL_GPUS

# Flags that compare/sweep set for every run themselves, and what to give instead.
REFUSED = {
    "--seed": "--seeds",
    "--overwrite": "nothing: finished runs are reused, interrupted ones resumed",
    "--resume": "nothing: interrupted runs are resumed automatically",
}
PER_RUN = ("algo", "dataset", "labels", "seed", "out")


def parse_names(flag: str, text: str) -> list[str]:
    """A comma list of names, without empties or duplicates."""
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise UserInputError(f"{flag} {text!r} has an empty entry; give a comma list such as a,b,c")
    duplicates = sorted({item for item in items if items.count(item) > 1})
    if duplicates:
        raise UserInputError(f"{flag} {text!r} names {duplicates[0]!r} twice")
    return items


def parse_ints(flag: str, text: str, minimum: int) -> list[int]:
    """A comma list of distinct integers, each at least ``minimum``."""
    values = []
    for item in parse_names(flag, text):
        try:
            value = int(item)
        except ValueError:
            raise UserInputError(f"{flag}: {item!r} is not an integer (e.g. 0,1,2)") from None
        if value < minimum:
            raise UserInputError(f"{flag}: {value} is out of range; valid: integers >= {minimum}")
        values.append(value)
    return values


def parse_algorithms(flag: str, text: str) -> list[str]:
    """A comma list of registered algorithm names (plugins already loaded)."""
    from ssl_toolkit.registry import get_algorithm

    names = parse_names(flag, text)
    for name in names:
        get_algorithm(name)
    return names


class _Refuse(argparse.Action):
    """A flag this command sets per run: using it is an error that says what to give instead."""

    def __init__(self, option_strings: list[str], dest: str, instead: str = "", **kwargs) -> None:
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)
        self.instead = instead

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        raise UserInputError(f"{option_string} is set per run by this command; use {self.instead} instead")


def _refuse(parser: argparse.ArgumentParser, refused: dict[str, str]) -> None:
    for flag, instead in refused.items():
        parser.add_argument(flag, dest=f"refused_{flag.strip('-')}", action=_Refuse, instead=instead)


def _experiment_parser(commands: argparse._SubParsersAction, name: str, summary: str,
                       description: str) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=summary, description=f"{description} Every run setting flag below "
                                 "applies to every run.")
    own = parser.add_argument_group(name)
    own.add_argument("--dataset", required=True, help="data set name (ssl-bench list datasets)")
    own.add_argument("--seeds", default="0", help="comma list of seeds")
    own.add_argument("--out", dest="root", type=Path, default=None, help="folder for the run folders and the report")
    own.add_argument("--config", help="JSON/YAML config applied to every run, beneath the flags")
    add_execution_options(parser)
    add_config_flags(parser, exclude=PER_RUN)
    _refuse(parser, REFUSED)
    return parser


def add_execution_options(parser: argparse.ArgumentParser) -> None:
    """``--jobs``, ``--gpus``, ``--backend`` and ``--plan``: how a command's runs execute (read by
    :func:`execution_from_args`)."""
    group = parser.add_argument_group("execution")
    group.add_argument("--jobs", type=int, default=None,
                       help="runs at a time (default: one per --gpus entry, else 1; with --backend ray: as many as "
                            "Ray's resources allow)")
    group.add_argument("--gpus", default=None, metavar="LIST",
                       help="all, or a comma list of GPU ids (or GPU-/MIG- UUIDs): job slot i sees only the i-th GPU "
                            "(CUDA_VISIBLE_DEVICES), round-robin when --jobs exceeds the list; with --backend ray "
                            "each run takes one GPU that Ray assigns (default: runs see every GPU)")
    group.add_argument("--backend", choices=BACKENDS, default="local",
                       help="local: a process pool on this machine; ray: Ray tasks (RAY_ADDRESS's cluster, or a "
                            "local Ray), optional extra: pip install 'ssl-toolkit[ray]'")
    group.add_argument("--plan", action="store_true",
                       help="run nothing: write the plan files and print the shell line of every unfinished run, "
                            "for a Slurm array or GNU parallel; then ssl-bench report DIR")


def parse_gpus(text: str) -> list[str]:
    """``--gpus``: ``all``, or distinct GPU indices (0,1,...) or UUIDs (GPU-..., MIG-...) as CUDA_VISIBLE_DEVICES
    takes them."""
    if text.strip() == ALL_GPUS:
        return [ALL_GPUS]
    gpus = parse_names("--gpus", text)
    for gpu in gpus:
        if not (gpu.isdigit() or gpu.startswith(("GPU-", "MIG-"))):
            raise UserInputError(f"--gpus: {gpu!r} is not a GPU; give all, or indices such as 0,1,2,3 "
                                 f"(or GPU-/MIG- UUIDs from nvidia-smi -L)")
    return gpus


def execution_from_args(args: argparse.Namespace) -> Execution:
    """The :class:`Execution` that :func:`add_execution_options`' flags ask for; bad values are refused here."""
    gpus = parse_gpus(args.gpus) if args.gpus is not None else []
    if gpus and getattr(args, "device", None) == "cpu":
        raise UserInputError(f"--gpus {args.gpus} with --device cpu: the runs would not use the GPUs; "
                             f"drop one of them")
    execution = Execution(jobs=args.jobs, gpus=gpus, backend=args.backend, plan=args.plan)
    if execution.backend == "ray":
        from ssl_toolkit.experiments.ray_backend import require_ray

        require_ray()
    return execution


def add_experiment_parsers(commands: argparse._SubParsersAction) -> None:
    compare = _experiment_parser(
        commands, "compare", "run algorithms x label counts x seeds and report them",
        "Run every algorithm x label count x seed with identical splits and settings, then report.",
    )
    compare.add_argument("--algos", required=True, help="comma list of algorithms (ssl-bench list algorithms)")
    compare.add_argument("--labels", dest="label_list", required=True, help="comma list of label counts")
    _refuse(compare, {"--algo": "--algos"})
    compare.set_defaults(handler=cmd_compare)

    sweep = _experiment_parser(
        commands, "sweep", "run a grid of settings x seeds for one algorithm and report it",
        "Run a grid of hyperparameters or run settings (labels, backbone, lr, ...) x seeds for one algorithm, "
        "then report.",
    )
    sweep.add_argument("--algo", required=True, help="algorithm (ssl-bench list algorithms)")
    sweep.add_argument("--labels", dest="label_list", default=None, help="comma list of label counts "
                       "(or --grid labels=...)")
    sweep.add_argument("--grid", action="append", required=True, metavar="KEY=v1,v2",
                       help="values to sweep, repeatable: a hyperparameter of the algorithm or a run setting")
    sweep.set_defaults(handler=cmd_sweep)

    report = commands.add_parser("report", help="tables and plots of existing run folders",
                                 description="Tables and plots of the run folders under DIR (searched recursively).")
    report.add_argument("run_root", type=Path, help="folder holding run folders")
    report.add_argument("--out", type=Path, default=None, help="where to write the report (default: DIR)")
    report.set_defaults(handler=cmd_report)


def _common(args: argparse.Namespace) -> tuple[dict, list[int]]:
    from ssl_toolkit.registry import load_plugins

    values = config_values(args)
    load_plugins(values.get("plugins") or [])
    # Every run gets the config's thread count (1 unless --threads), whatever --jobs is: results depend on it.
    return values, parse_ints("--seeds", args.seeds, 0)


def cmd_compare(args: argparse.Namespace) -> int:
    from ssl_toolkit.experiments import plan_compare, run_all

    execution = execution_from_args(args)
    values, seeds = _common(args)
    algos = parse_algorithms("--algos", args.algos)
    labels = parse_ints("--labels", args.label_list, 1)
    root = args.root or Path("runs") / f"compare-{args.dataset}"
    return run_all(plan_compare(algos, args.dataset, labels, seeds, root, values, args.config), root, execution)


def cmd_sweep(args: argparse.Namespace) -> int:
    from ssl_toolkit.experiments import plan_sweep, run_all
    from ssl_toolkit.experiments.plan import parse_grid

    execution = execution_from_args(args)
    values, seeds = _common(args)
    (algo,) = parse_algorithms("--algo", args.algo)
    grid = parse_grid(args.grid, algo)
    keys = {key for key, _ in grid}
    if "labels" in keys and args.label_list is not None:
        raise UserInputError("give label counts with --labels or with --grid labels=..., not both")
    if "labels" not in keys and args.label_list is None:
        raise UserInputError("sweep needs --labels N[,N...] or --grid labels=N,N...")
    clash = sorted((set(values) | set(values.get("hparams") or {})) & keys)
    if clash:
        raise UserInputError(f"--{clash[0].replace('_', '-')} (or --set {clash[0]}=...) clashes with --grid "
                             f"{clash[0]}=...; keep one of them")
    labels = parse_ints("--labels", args.label_list, 1) if args.label_list is not None else []
    root = args.root or Path("runs") / f"sweep-{args.dataset}-{algo}"
    return run_all(plan_sweep(algo, args.dataset, labels, grid, seeds, root, values, args.config), root, execution)


def cmd_report(args: argparse.Namespace) -> int:
    from ssl_toolkit.report import build_report

    build_report(args.run_root, args.out).print()
    return 0
