"""The ``ssl-bench`` command: run | resume | list | compare | sweep | tune | report | export | evaluate | predict."""

from __future__ import annotations

import os
import sys

from ssl_toolkit.cli.parsing import OneLineParser
from ssl_toolkit.errors import UserInputError


def build_parser() -> OneLineParser:
    from ssl_toolkit.cli.experiments import add_experiment_parsers
    from ssl_toolkit.cli.listing import add_list_parser
    from ssl_toolkit.cli.model import add_model_parsers
    from ssl_toolkit.cli.run import add_run_parser
    from ssl_toolkit.cli.tune import add_tune_parser

    parser = OneLineParser(prog="ssl-bench", description="Semi-supervised learning benchmark toolkit")
    commands = parser.add_subparsers(dest="command", parser_class=OneLineParser)
    add_run_parser(commands)
    add_list_parser(commands)
    add_experiment_parsers(commands)
    add_model_parsers(commands)
    add_tune_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``ssl-bench`` command; returns its exit code (2 for bad input, with one line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return args.handler(args)
    except UserInputError as error:
        # Under torchrun every process meets the same bad input (the runner makes them agree);
        # rank 0 alone says so.
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # A second Ctrl-C during a run, or one before training started: files already written stay.
        print("interrupted; every file written so far is complete (writes are atomic)", file=sys.stderr)
        return 130
