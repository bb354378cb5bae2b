"""Many runs under one fair protocol: plan them (:mod:`.plan`), execute them (:mod:`.execution`), report them.

Execution goes through one interface whatever runs the processes: the local pool (:mod:`.pool`),
Ray (:mod:`.ray_backend`), or a scheduler given the printed command lines (``--plan``); each run is
one ``ssl-bench run`` process started the same way (:mod:`.launch`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ssl_toolkit.experiments.execution import Execution, execute, print_plan
from ssl_toolkit.experiments.launch import RunOutcome
from ssl_toolkit.experiments.plan import PlannedRun, plan_compare, plan_sweep

__all__ = ["Execution", "PlannedRun", "RunOutcome", "execute", "plan_compare", "plan_sweep", "print_plan",
           "run_all"]


def run_all(runs: Sequence[PlannedRun], root: Path, execution: Execution) -> int:
    """Run what is not finished (or only print its commands), then print the report; exit code 1 when any
    run failed."""
    from rich.console import Console

    from ssl_toolkit.report import build_report

    if execution.plan:
        print_plan(runs, root)
        return 0
    try:
        outcomes = execute(runs, root, execution)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume the unfinished runs", file=sys.stderr)
        return 130
    build_report(root).print()
    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    reused = sum(outcome.status == "reused" for outcome in outcomes)
    console = Console(file=sys.stderr)
    console.print(
        f"{len(outcomes)} runs: {reused} reused, {len(outcomes) - reused - len(failed)} run now, {len(failed)} failed",
        highlight=False,
    )
    for outcome in failed:
        console.print(f"failed: {outcome.run.name}: {outcome.error}", highlight=False, markup=False, soft_wrap=True)
    return 1 if failed else 0
