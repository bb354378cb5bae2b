"""Resolving a run config: command line > --config file > preset > data set defaults > field defaults.

Every name, type and range that can be checked without the data is checked here, so a mistake is a
one-line error before anything is read or written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ssl_toolkit.config.presets import get_preset, merge_values
from ssl_toolkit.config.run_config import RunConfig
from ssl_toolkit.config.values import read_config_file, typed_values
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.schedules import PAPER_RAMPDOWN_FRACTION, PAPER_RAMPUP_FRACTION
from ssl_toolkit.settings import check_settings

# The ResNet runs' cosine would end at epoch 350 of the 300 trained.
COSINE_LENGTH_FACTOR = 350 / 300
Layer = tuple[str, dict[str, Any]]
COMMAND_LINE = "command line"


def merge_layers(layers: list[Layer]) -> dict[str, Any]:
    """Merge (name, values) layers from lowest to highest precedence; ``hparams`` merge key by key.

    Each layer's keys, types and ranges are checked against RunConfig as it is merged, so an error
    names the layer it came from (``--config run.yaml``, ``preset digits-cpu``, ``command line``).
    """
    merged: dict[str, Any] = {"hparams": {}}
    for where, values in layers:
        values = dict(values)
        layer_hparams = values.pop("hparams", None) or {}
        if not isinstance(layer_hparams, dict):
            raise UserInputError(f"{where}: hparams must be a mapping of hyperparameter names to values")
        typed = typed_values(where, values, RunConfig, as_flag=where == COMMAND_LINE)
        merged = merge_values(merged, {**{k: v for k, v in typed.items() if v is not None or k not in merged},
                                       "hparams": layer_hparams})
    return merged


def resolve_run_config(cli: dict[str, Any], config_file: str | Path | None = None) -> RunConfig:
    """Merge the layers, fill the data set's defaults, and check every value.

    ``cli`` holds the values given on the command line (or by a Python caller), ``config_file`` a
    JSON/YAML config (a saved config.json reruns its run). Algorithm hyperparameters are checked
    against the algorithm's dataclass and saved fully resolved.

    Example:
        >>> config = resolve_run_config({"algo": "pi_model", "dataset": "digits", "steps": 300})
        >>> config.batch_size, config.backbone
        (64, 'convnet_tiny')
    """
    from ssl_toolkit.registry import load_plugins

    upper: list[Layer] = []
    if config_file:
        upper.append((f"--config {config_file}", read_config_file(config_file)))
    upper.append((COMMAND_LINE, {k: v for k, v in cli.items() if v is not None}))
    given = merge_layers(upper)
    # Plugins first: they may register the algorithm, data set or backbone named below.
    load_plugins(given.get("plugins") or [])
    preset_name = given.get("preset") or _dataset_spec(given.get("dataset") or RunConfig.dataset).default_preset
    layers = list(upper)
    preset_values: dict[str, Any] = {}
    if preset_name:
        preset_values = get_preset(preset_name).values(given.get("algo") or RunConfig.algo)
        layers.insert(0, (f"preset {preset_name}", preset_values))
    config = RunConfig(**merge_layers(layers))
    config.preset = preset_name
    _resolve_hparams(config)
    reference = _fill_dataset_defaults(config, preset_values)
    _scale_eval_interval(config, given, reference)
    _fill_derived(config)
    check_settings(config, as_flag=True)
    _check_relations(config)
    return config


def _dataset_spec(name: str):
    from ssl_toolkit.data.sources import get_dataset_spec

    return get_dataset_spec(name)


def _resolve_hparams(config: RunConfig) -> None:
    from ssl_toolkit.registry import get_algorithm

    algorithm = get_algorithm(config.algo)
    typed = typed_values(f"hyperparameters of {config.algo}", config.hparams, algorithm.Config)
    # Saved resolved, so a resume with the original flags compares equal to the saved config.
    config.hparams = algorithm.Config(**typed).as_dict()


def _fill_dataset_defaults(config: RunConfig, preset_values: dict[str, Any]) -> dict[str, Any]:
    """Fill what no layer set from the data set's defaults; returns the defaults' step budget and
    evaluation interval (the preset's, else the data set's), which a user's own --steps scales."""
    spec = _dataset_spec(config.dataset)
    defaults = dict(spec.run_defaults)
    if spec.sized_to_data:
        from ssl_toolkit.data.sources import defaults_for_data, load_dataset

        # Reading the data here also checks it before anything is written (the trainer reuses it).
        arrays = load_dataset(config.dataset, config.data_dir, config.dataset_options())
        extra = 0 if arrays.x_extra_unlabeled is None else len(arrays.x_extra_unlabeled)
        defaults = defaults_for_data(arrays, extra, config.image_size)
    for key, value in defaults.items():
        if getattr(config, key) is None:
            setattr(config, key, value)
    config.labels = 100 if config.labels is None else config.labels
    config.backbone = config.backbone or spec.backbone
    config.val_size = spec.val_size if config.val_size is None else config.val_size
    config.translate = spec.augment.translate if config.translate is None else config.translate
    config.flip = spec.augment.flip if config.flip is None else config.flip
    config.noise = spec.augment.noise if config.noise is None else config.noise
    return {key: preset_values.get(key, defaults.get(key)) for key in ("steps", "eval_every")}


def _scale_eval_interval(config: RunConfig, given: dict[str, Any], reference: dict[str, Any]) -> None:
    """A --steps of one's own without --eval-every keeps the defaults' number of evaluations.

    The digits defaults evaluate every 500 of 3800 steps; a 380-step run then evaluates every 50,
    not twice. Steps from a --config file count as given (a saved config.json reruns as it was).
    """
    steps, eval_every = reference.get("steps"), reference.get("eval_every")
    if "eval_every" in given or "steps" not in given or not steps or not eval_every:
        return
    if isinstance(config.steps, int) and config.steps > 0:
        config.eval_every = max(1, min(config.steps, round(eval_every * config.steps / steps)))


def _fill_derived(config: RunConfig) -> None:
    if config.checkpoint_every is None:
        config.checkpoint_every = config.eval_every
    steps = config.steps if isinstance(config.steps, int) and config.steps > 0 else 0
    if config.lr_rampup is None:
        config.lr_rampup = round(PAPER_RAMPUP_FRACTION * steps) if config.lr_schedule == "ramp" else 0
    if config.lr_rampdown is None:
        factor = PAPER_RAMPDOWN_FRACTION if config.lr_schedule == "ramp" else COSINE_LENGTH_FACTOR
        config.lr_rampdown = round(factor * steps)
    if config.out is None:
        config.out = str(Path("runs") / f"{config.dataset}-{config.labels}" / config.algo / f"seed{config.seed}")


def _check_relations(config: RunConfig) -> None:
    """Checks that tie two settings together (each setting's own range is declared with it)."""
    if config.labeled_batch_size >= config.batch_size:
        raise UserInputError(
            f"--labeled-batch-size {config.labeled_batch_size} must be smaller than --batch-size "
            f"{config.batch_size}; valid: 1..{config.batch_size - 1}"
        )
    if config.lr_rampup > config.steps:
        raise UserInputError(f"--lr-rampup {config.lr_rampup} is out of range; valid: 0..{config.steps} "
                             f"(the run's --steps)")
    if config.lr_schedule == "ramp" and config.lr_rampdown > config.steps:
        raise UserInputError(f"--lr-rampdown {config.lr_rampdown} is out of range; valid: 0..{config.steps} "
                             f"(the run's --steps)")
    if config.lr_schedule == "cosine" and config.lr_rampdown <= 0:
        raise UserInputError(f"--lr-rampdown {config.lr_rampdown} (the cosine's length) must be positive")

