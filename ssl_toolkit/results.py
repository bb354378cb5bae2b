"""Run folder I/O. Every file is written to a temporary name, synced, then renamed into place,
so a killed run never leaves a half-written result."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600 files; results should get the permissions any new file would.
        os.chmod(tmp, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Rewrite the whole JSON-lines file atomically (metrics files are small)."""
    atomic_write_bytes(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode())


def write_error(path: str | Path, fields: dict[str, Any], defaults: dict[str, Any] | None = None) -> None:
    """Record why a run failed in its error.json, keeping what an earlier writer recorded there.

    The run itself writes the error it saw (a divergence); a comparison that launched it adds the
    exit code, the command and the tail of stderr. ``fields`` win over what the file holds, which
    wins over ``defaults``.
    """
    path = Path(path)
    record: dict[str, Any] = {}
    if path.exists():
        try:
            old = json.loads(path.read_text())
            record = old if isinstance(old, dict) else {}
        except (OSError, ValueError):
            record = {}
    atomic_write_json(path, {**(defaults or {}), **record, **fields})


class RunFolder:
    """The files of one run: config.json, split.json, metrics.jsonl, checkpoint.pt, final.json."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def split(self) -> Path:
        return self.path / "split.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def final(self) -> Path:
        return self.path / "final.json"

    @property
    def error(self) -> Path:
        return self.path / "error.json"

    def exists(self) -> bool:
        return self.path.exists() and any(self.path.iterdir())

