"""The typed run configuration and its resolution: command line > --config file > preset > defaults."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ssl_toolkit.errors import UserInputError


@dataclass
class RunConfig:
    """Everything a run depends on; saved as config.json so ``--config`` can rerun it exactly.

    Fields left ``None`` take the data set's defaults (see ``ssl-bench list``) when resolved.
    """

    algo: str = "mean_teacher"
    dataset: str = "digits"
    labels: int | None = None
    seed: int = 0
    steps: int | None = None
    batch_size: int | None = None
    labeled_batch_size: int | None = None
    backbone: str | None = None
    val_size: int | None = None
    eval_every: int | None = None
    checkpoint_every: int | None = None
    data_dir: str | None = None
    out: str | None = None
    device: str = "auto"
    threads: int | None = None
    # GPU: deterministic kernels (slower); the CPU is deterministic without it.
    deterministic: bool = False
    # Optimizer and learning-rate schedule (Mean Teacher paper, Appendix B.1 by default).
    optimizer: str = "adam"
    lr: float = 0.003
    beta1: float = 0.9
    beta1_rampdown: float = 0.5
    beta2: float = 0.999
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    lr_schedule: str = "ramp"
    lr_rampup: int | None = None
    lr_rampdown: int | None = None
    # Augmentation; None takes the data set's default.
    translate: int | None = None
    flip: bool | None = None
    noise: float | None = None
    zca: bool = False
    # Data set options: SVHN's extra images join the unlabeled pool; image folders are resized.
    svhn_extra: bool = False
    image_size: int | None = None
    max_unlabeled: int | None = None
    # Cap on the unlabeled stream (labeled images included); None uses every training image.
    unlabeled_pool: int | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    plugins: list[str] = field(default_factory=list)
    preset: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def dataset_options(self) -> dict[str, Any]:
        return {"svhn_extra": self.svhn_extra, "image_size": self.image_size, "max_unlabeled": self.max_unlabeled}


CONFIG_KEYS = [f.name for f in dataclasses.fields(RunConfig)]
# Keys a resume may change: the step budget, where and how fast it runs, how often it reports.
RESUMABLE_KEYS = frozenset({"steps", "out", "threads", "device", "eval_every", "checkpoint_every", "preset"})


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys (other than ``RESUMABLE_KEYS``) whose values differ; a key missing from ``saved``, written
    before that key existed, counts as its default."""
    defaults = RunConfig().to_json()
    differing = []
    for key, value in current.items():
        old = saved.get(key, defaults.get(key))
        if key in RESUMABLE_KEYS or old == value:
            continue
        if key == "hparams" and isinstance(old, dict) and isinstance(value, dict):
            differing += [f"hparams.{k}" for k in sorted(set(old) | set(value)) if old.get(k) != value.get(k)]
        else:
            differing.append(key)
    return sorted(differing)
CHOICES = {"optimizer": ("adam", "sgd"), "lr_schedule": ("ramp", "cosine"), "device": ("auto", "cpu", "cuda")}


def parse_scalar(text: str) -> Any:
    """Read a command-line value the way YAML would: ``0.99`` float, ``10`` int, ``true`` bool, ``null``."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args and (typing.get_origin(hint) in (typing.Union, types.UnionType)):
        return " or ".join(_type_name(a) for a in args) + " or null"
    return getattr(hint, "__name__", str(hint))


def coerce(where: str, key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the type ``hint``; ints are accepted as floats, nothing else is converted."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        for option in typing.get_args(hint):
            if option is type(None):
                continue
            try:
                return coerce(where, key, value, option)
            except UserInputError:
                continue
    elif origin in (list, dict):
        if isinstance(value, origin):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is bool or hint is str:
        if isinstance(value, hint):
            return value
    raise UserInputError(f"{where} {key}={value!r} has the wrong type; expected {_type_name(hint)}")


def check_keys(where: str, given: dict[str, Any], valid: list[str]) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise UserInputError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(sorted(valid))}")


def typed_values(where: str, values: dict[str, Any], cls: type) -> dict[str, Any]:
    """Check the keys and types of ``values`` against the fields of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    check_keys(where, values, fields)
    return {key: coerce(where, key, value, hints[key]) for key, value in values.items()}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A run config as JSON or YAML (a saved config.json works as is)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise UserInputError(f"--config {path}: cannot read it ({error.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UserInputError(f"--config {path}: not valid JSON or YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserInputError(f"--config {path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def merge_layers(layers: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Merge (name, values) layers from lowest to highest precedence; ``hparams`` merge key by key."""
    merged: dict[str, Any] = {}
    hparams: dict[str, Any] = {}
    for where, values in layers:
        values = dict(values)
        layer_hparams = values.pop("hparams", None) or {}
        if not isinstance(layer_hparams, dict):
            raise UserInputError(f"{where}: hparams must be a mapping of hyperparameter names to values")
        typed = typed_values(where, values, RunConfig)
        merged.update({k: v for k, v in typed.items() if v is not None or k not in merged})
        hparams.update(layer_hparams)
    merged["hparams"] = hparams
    return merged


def check_choices(config: RunConfig) -> None:
    for key, choices in CHOICES.items():
        value = getattr(config, key)
        if value not in choices:
            raise UserInputError(f"--{key.replace('_', '-')} {value!r} is not valid; valid: {', '.join(choices)}")


PRESET_DIR = Path(__file__).parent / "presets"
PRESET_METADATA = ("description", "paper_row", "published_error")
# Presets may also hold ``algo_hparams: {algorithm: {key: value}}``: hyperparameters that apply only
# when that algorithm runs, beneath every ``hparams`` layer, so one preset serves every --algo.


def list_presets() -> dict[str, dict[str, Any]]:
    """Every shipped preset by name, as written in its YAML file."""
    return {path.stem: yaml.safe_load(path.read_text()) for path in sorted(PRESET_DIR.glob("*.yaml"))}


def load_preset(name: str) -> dict[str, Any]:
    """The config values of preset ``name`` (its descriptive fields removed)."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        raise UserInputError(f"unknown preset {name!r}; valid: {', '.join(list_presets())}")
    values = yaml.safe_load(path.read_text()) or {}
    return {k: v for k, v in values.items() if k not in PRESET_METADATA}


# The paper's ConvNet runs: consistency/lr ramp-up over 40k and lr ramp-down over the last 25k of
# 150k steps; the ResNet runs' cosine would end at epoch 350 of 300 trained.
RAMPUP_FRACTION = 40_000 / 150_000
RAMPDOWN_FRACTION = 25_000 / 150_000
COSINE_LENGTH_FACTOR = 350 / 300


def resolve_run_config(cli: dict[str, Any], config_file: str | None = None) -> RunConfig:
    """Merge defaults < preset < --config file < command line, then fill the data set's defaults.

    Checks names and types of every key (hyperparameters against the algorithm's dataclass) and
    the ranges that do not need the data; the rest is checked once the data is loaded.
    """
    from ssl_toolkit.backbones import create_backbone  # noqa: F401  (registers our timm models)
    from ssl_toolkit.data.sources import get_dataset_spec
    from ssl_toolkit.registry import get_algorithm, load_plugin

    file_values = read_config_file(config_file) if config_file else {}
    upper: list[tuple[str, dict[str, Any]]] = []
    if file_values:
        upper.append((f"--config {config_file}", file_values))
    upper.append(("command line", {k: v for k, v in cli.items() if v is not None}))
    preset = cli.get("preset") or file_values.get("preset")
    if not preset:
        # A data set may name a preset as its defaults (the CPU-sized sets do).
        dataset = merge_layers(upper).get("dataset") or RunConfig.dataset
        preset = get_dataset_spec(dataset).default_preset
    preset_values = load_preset(preset) if preset else {}
    algo_hparams = preset_values.pop("algo_hparams", None) or {}
    layers = ([(f"preset {preset}", preset_values)] if preset else []) + upper
    merged = merge_layers(layers)
    merged["preset"] = preset
    config = RunConfig(**merged)
    if not isinstance(algo_hparams, dict) or not all(isinstance(v, dict) for v in algo_hparams.values()):
        raise UserInputError(f"preset {preset}: algo_hparams must map algorithm names to hyperparameter mappings")
    config.hparams = {**algo_hparams.get(config.algo, {}), **config.hparams}
    for module in config.plugins:
        load_plugin(module)

    algorithm = get_algorithm(config.algo)
    typed = typed_values(f"hyperparameter for {config.algo}", config.hparams, algorithm.Config)
    # Saved resolved, so a resume with the original flags compares equal to the saved config.
    config.hparams = algorithm.Config(**typed).as_dict()
    spec = get_dataset_spec(config.dataset)
    for key, value in spec.run_defaults.items():
        if getattr(config, key) is None:
            setattr(config, key, value)
    config.labels = config.labels if config.labels is not None else spec.run_defaults.get("labels", 100)
    config.backbone = config.backbone or spec.backbone
    config.val_size = spec.val_size if config.val_size is None else config.val_size
    config.translate = spec.augment.translate if config.translate is None else config.translate
    config.flip = spec.augment.flip if config.flip is None else config.flip
    config.noise = spec.augment.noise if config.noise is None else config.noise
    if config.checkpoint_every is None:
        config.checkpoint_every = config.eval_every
    check_choices(config)
    _check_positive(config)
    if config.lr_rampup is None:
        config.lr_rampup = round(RAMPUP_FRACTION * config.steps) if config.lr_schedule == "ramp" else 0
    if config.lr_rampdown is None:
        factor = RAMPDOWN_FRACTION if config.lr_schedule == "ramp" else COSINE_LENGTH_FACTOR
        config.lr_rampdown = round(factor * config.steps)
    _check_schedule(config)
    if config.out is None:
        config.out = str(Path("runs") / f"{config.dataset}-{config.labels}" / config.algo / f"seed{config.seed}")
    return config


def _check_positive(config: RunConfig) -> None:
    for key in ("steps", "batch_size", "labeled_batch_size", "eval_every", "checkpoint_every", "labels"):
        value = getattr(config, key)
        if value <= 0:
            raise UserInputError(f"--{key.replace('_', '-')} {value} must be a positive integer")
    if config.threads is not None and config.threads <= 0:
        raise UserInputError(f"--threads {config.threads} must be a positive integer")
    if config.labeled_batch_size >= config.batch_size:
        raise UserInputError(
            f"--labeled-batch-size {config.labeled_batch_size} must be smaller than --batch-size "
            f"{config.batch_size}; valid: 1..{config.batch_size - 1}"
        )
    if config.lr <= 0:
        raise UserInputError(f"--lr {config.lr} must be positive")
    for key in ("beta1", "beta1_rampdown", "beta2", "momentum"):
        value = getattr(config, key)
        if not 0.0 <= value < 1.0:
            raise UserInputError(f"{key}={value} is out of range; valid: [0, 1)")
    if config.weight_decay < 0:
        raise UserInputError(f"weight_decay={config.weight_decay} must be >= 0")
    if config.translate < 0 or config.noise < 0:
        raise UserInputError(
            f"augmentation translate={config.translate} noise={config.noise}: both must be >= 0"
        )


def _check_schedule(config: RunConfig) -> None:
    if not 0 <= config.lr_rampup <= config.steps:
        raise UserInputError(f"lr_rampup={config.lr_rampup} must lie in 0..{config.steps} (the run's --steps)")
    if config.lr_schedule == "ramp" and not 0 <= config.lr_rampdown <= config.steps:
        raise UserInputError(f"lr_rampdown={config.lr_rampdown} must lie in 0..{config.steps} (the run's --steps)")
    if config.lr_schedule == "cosine" and config.lr_rampdown <= 0:
        raise UserInputError(f"lr_rampdown={config.lr_rampdown} (the cosine's length) must be positive")
