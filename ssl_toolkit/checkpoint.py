"""Checkpoints: everything a run's future depends on, written atomically, read without executing code."""

from __future__ import annotations

import io
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_toolkit.errors import UserInputError
from ssl_toolkit.results import atomic_write_bytes


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a nested structure of dicts, lists and tuples (a checkpoint, a hook's output)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_in(item)


def capture_rng_states(augment_generator: torch.Generator) -> dict[str, Any]:
    """Every random state the training loop reads: Python, numpy, torch CPU and device, augmentation."""
    np_state = np.random.get_state()
    states: dict[str, Any] = {
        "python": list(random.getstate()[1]) + [random.getstate()[2]],
        "python_version": random.getstate()[0],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
        "augment": augment_generator.get_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any], augment_generator: torch.Generator) -> None:
    python = states["python"]
    random.setstate((states["python_version"], tuple(python[:-1]), python[-1]))
    np.random.set_state(("MT19937", states["numpy"].numpy().astype(np.uint32), states["numpy_pos"]))
    torch.set_rng_state(states["torch"])
    augment_generator.set_state(states["augment"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Serialize ``state`` with torch.save and write it atomically (temp file, fsync, rename)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: a file that tries to run code is refused."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"no checkpoint at {path}; a run writes one every --checkpoint-every steps")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for bad files; all mean "unusable"
        raise UserInputError(
            f"checkpoint {path} cannot be loaded safely: {_load_failure(error)}; "
            f"valid: a checkpoint.pt written by ssl-bench run"
        ) from None


def _load_failure(error: Exception) -> str:
    """The one informative phrase of torch.load's error (its weights-only errors are paragraphs
    of advice around it, with terminal colour codes)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", text, re.S)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = found.group(1) if found else (lines[0] if lines else "")
    detail = " ".join(detail.split()).split(". ")[0]
    if isinstance(error, EOFError) and not detail:
        return "the file ends early (empty or truncated)"
    return detail[:200] or type(error).__name__
