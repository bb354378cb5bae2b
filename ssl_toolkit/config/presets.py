"""Presets: named bundles of config values, one YAML file per paper setting.

A file holds the values shared by every algorithm of its setting (``config``), optionally on top
of a base file it ``extends`` (files starting with ``_`` are bases, never listed), and one section
per algorithm under ``algorithms`` with that algorithm's own values and published number::

    description: CIFAR-10, 4000 labels, ConvNet-13 (Mean Teacher paper, Table 2)
    extends: _convnet13-paper
    config: {dataset: cifar10, labels: 4000, zca: true}
    algorithms:
      mean_teacher:
        short: mt                      # also runnable as --preset mt-cifar10-4000-convnet13
        paper_row: MT paper Table 2, CIFAR-10 4000 labels, Mean Teacher
        published_error: 12.31 ± 0.28
        config: {labeled_batch_size: 8, hparams: {consistency_weight: 8.0}}

``--preset cifar10-4000-convnet13 --algo pi_model`` applies the shared values and the
``pi_model`` section; ``--preset pi-cifar10-4000-convnet13`` does the same and sets ``--algo``. An
algorithm without a section gets the shared values only. Where each value comes from is written
in docs/reproducing.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ssl_toolkit.errors import UserInputError
from ssl_toolkit.naming import closest

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
_FILE_KEYS = {"description", "extends", "config", "algorithms"}
_SECTION_KEYS = {"short", "paper_row", "published_error", "config"}


@dataclass(frozen=True)
class Preset:
    """One name ``--preset`` accepts: a setting file, or one algorithm's section of it (``algo`` set)."""

    name: str
    setting: str
    algo: str | None
    description: str
    paper_row: str | None
    published_error: str | None

    def values(self, algo: str | None) -> dict[str, Any]:
        """Config values for a run of ``algo`` (this preset's own algorithm when it has one)."""
        data = _read(self.setting)
        chosen = self.algo or algo
        section = (data.get("algorithms") or {}).get(chosen) or {}
        values = merge_values(_base_values(data), section.get("config") or {})
        if self.algo is not None:
            values["algo"] = self.algo
        return values


def merge_values(lower: dict[str, Any], upper: dict[str, Any]) -> dict[str, Any]:
    """``upper`` over ``lower``; their ``hparams`` merge key by key."""
    merged = {**lower, **upper}
    if "hparams" in lower or "hparams" in upper:
        merged["hparams"] = {**(lower.get("hparams") or {}), **(upper.get("hparams") or {})}
    return merged


def _read(stem: str) -> dict[str, Any]:
    path = PRESET_DIR / f"{stem}.yaml"
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise UserInputError(f"preset file {path.name}: unknown key {sorted(unknown)[0]!r}; valid: "
                             f"{', '.join(sorted(_FILE_KEYS))}")
    for algo, section in (data.get("algorithms") or {}).items():
        bad = set(section or {}) - _SECTION_KEYS
        if bad:
            raise UserInputError(f"preset file {path.name}, section {algo}: unknown key {sorted(bad)[0]!r}; "
                                 f"valid: {', '.join(sorted(_SECTION_KEYS))}")
    return data


def _base_values(data: dict[str, Any]) -> dict[str, Any]:
    base = data.get("extends")
    lower = _base_values(_read(base)) if base else {}
    return merge_values(lower, data.get("config") or {})


def list_presets() -> dict[str, Preset]:
    """Every name ``--preset`` accepts, sorted: each setting, then each algorithm section's short name."""
    presets: dict[str, Preset] = {}
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        if path.stem.startswith("_"):
            continue
        data = _read(path.stem)
        description = str(data.get("description", ""))
        presets[path.stem] = Preset(path.stem, path.stem, None, description, None, None)
        for algo, section in (data.get("algorithms") or {}).items():
            section = section or {}
            if section.get("short"):
                name = f"{section['short']}-{path.stem}"
                presets[name] = Preset(name, path.stem, algo, description, section.get("paper_row"),
                                       None if section.get("published_error") is None
                                       else str(section["published_error"]))
    return dict(sorted(presets.items()))


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name suggests the closest ones."""
    presets = list_presets()
    if name not in presets:
        raise UserInputError(f"unknown preset {name!r}{closest(name, presets)}; valid: {', '.join(presets)}")
    return presets[name]
