"""Suggestions for mistyped names: "did you mean" from the valid ones."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, valid: Iterable[str], count: int = 3) -> str:
    """`` (did you mean 'x' or 'y'?)`` for the valid names closest to ``name``; empty when none is close."""
    matches = difflib.get_close_matches(name, list(valid), n=count, cutoff=0.6)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(repr(m) for m in matches) + "?)"
