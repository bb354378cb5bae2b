"""Many runs under one fair protocol: plan them (:mod:`.plan`), run them (:mod:`.pool`), report them."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ssl_toolkit.errors import UserInputError
from ssl_toolkit.experiments.plan import PlannedRun, check_reusable, plan_compare, plan_sweep
from ssl_toolkit.experiments.pool import RunOutcome, execute

__all__ = ["PlannedRun", "RunOutcome", "plan_compare", "plan_sweep", "run_all"]


def run_all(runs: Sequence[PlannedRun], jobs: int, root: Path) -> int:
    """Check reuse, run what is not finished, print the report; exit code 1 when any run failed."""
    from rich.console import Console

    from ssl_toolkit.report import build_report

    if jobs < 1:
        raise UserInputError(f"--jobs {jobs} must be a positive integer")
    check_reusable(runs)
    root.mkdir(parents=True, exist_ok=True)
    try:
        outcomes = execute(runs, jobs, root)
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
