"""``ssl-bench list``: algorithms with their hyperparameters, data sets, backbones, presets."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from ssl_toolkit.settings import settings_of

SECTIONS = ("algorithms", "datasets", "backbones", "presets")


def add_list_parser(commands: argparse._SubParsersAction) -> None:
    listing = commands.add_parser("list", help="algorithms, data sets, backbones, presets",
                                  description="List what --algo, --dataset, --backbone and --preset accept.")
    listing.add_argument("what", nargs="?", default="all", choices=["all", *SECTIONS], help="what to list")
    listing.add_argument("--format", choices=["table", "json"], default="table",
                         help="table for reading, json for scripts")
    listing.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE",
                         help="import MODULE (or a .py file) first, so its algorithms and data sets are listed")
    listing.set_defaults(handler=cmd_list)


def catalogue(what: str) -> dict[str, list[dict[str, Any]]]:
    """What ``list`` shows, as plain data: one list of entries per section."""
    from ssl_toolkit.backbones import list_backbones
    from ssl_toolkit.config import list_presets
    from ssl_toolkit.data.sources import get_dataset_spec, list_datasets
    from ssl_toolkit.registry import get_algorithm, list_algorithms

    found: dict[str, list[dict[str, Any]]] = {}
    if what in ("all", "algorithms"):
        found["algorithms"] = [
            {"name": name, "hyperparameters": {i.name: i.default for i in settings_of(get_algorithm(name).Config)}}
            for name in list_algorithms()
        ]
    if what in ("all", "datasets"):
        found["datasets"] = []
        for name in list_datasets():
            spec = get_dataset_spec(name)
            found["datasets"].append({"name": name, "description": spec.description, "backbone": spec.backbone,
                                      "defaults": spec.run_defaults, "preset": spec.default_preset})
    if what in ("all", "backbones"):
        found["backbones"] = [{"name": name} for name in list_backbones()]
    if what in ("all", "presets"):
        found["presets"] = [
            {"name": name, "algo": p.algo, "paper_row": p.paper_row, "published_error": p.published_error,
             "description": p.description}
            for name, p in list_presets().items()
        ]
    return found


def cmd_list(args: argparse.Namespace) -> int:
    from ssl_toolkit.registry import load_plugins

    load_plugins(args.plugins)
    found = catalogue(args.what)
    if args.format == "json":
        print(json.dumps(found, indent=2, sort_keys=True, default=str))
        return 0
    console = Console()
    if not console.is_terminal:
        # Piped output has no width of its own; rich's 80 columns would cut names.
        console = Console(width=200)
    tables = {
        "algorithms": ("algorithms (--algo; hyperparameters with --set KEY=VALUE)",
                       ["name", "hyperparameters (default)"],
                       lambda e: [e["name"], ", ".join(f"{k}={v!r}" for k, v in e["hyperparameters"].items()) or "-"]),
        "datasets": ("data sets (--dataset)", ["name", "description", "backbone", "default steps/batch/labeled"],
                     lambda e: [e["name"], e["description"], e["backbone"],
                                "/".join(str(e["defaults"].get(k)) for k in ("steps", "batch_size",
                                                                             "labeled_batch_size"))]),
        "backbones": ("backbones (--backbone; or any timm model name)", ["name"], lambda e: [e["name"]]),
        "presets": ("presets (--preset)", ["name", "paper row", "published error %", "description"],
                    lambda e: [e["name"], e["paper_row"] or "-", e["published_error"] or "-", e["description"]]),
    }
    for section, entries in found.items():
        title, columns, cells = tables[section]
        table = Table(title=title)
        for i, column in enumerate(columns):
            # Names are never cut: they are what the user types next.
            table.add_column(column, no_wrap=i == 0, overflow="fold")
        for entry in entries:
            table.add_row(*[str(c) for c in cells(entry)])
        console.print(table)
    return 0
