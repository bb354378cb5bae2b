"""RunConfig: the one contract between run, resume, compare, sweep, tune and report.

Every field declares its role (see :class:`ssl_toolkit.settings.Role`), its help text and its valid
range. The command-line flags, the resume rule, compare's reuse rule and the report's "swept
setting" all read those declarations, and :func:`differences` is the one way to tell two configs
apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ssl_toolkit.settings import Role, names_with_role, setting, settings_of

ID, EXEC = Role.IDENTITY, Role.EXECUTION
DATASET_DEFAULT = "the data set's"
MAX_SEED = 2**32 - 1  # numpy's global seed is 32-bit
LOGGER_NAMES = ("csv", "tensorboard", "wandb")


@dataclass
class RunConfig:
    """Everything a run depends on; saved as config.json so ``--config`` reruns it exactly.

    Fields left ``None`` take the data set's defaults (see ``ssl-bench list``) when resolved by
    :func:`ssl_toolkit.config.resolve_run_config`.

    Example:
        >>> config = RunConfig(algo="pi_model", dataset="digits", steps=300)
        >>> config.algo
        'pi_model'
    """

    algo: str = setting("mean_teacher", "algorithm (ssl-bench list algorithms)", role=ID)
    dataset: str = setting("digits", "data set (ssl-bench list datasets)", role=ID)
    labels: int | None = setting(None, "labeled training images, class-balanced", role=ID, low=1,
                                 default_text=DATASET_DEFAULT)
    seed: int = setting(0, "seed of the split, the initialization and the augmentation", role=ID, low=0,
                        high=MAX_SEED)
    backbone: str | None = setting(None, "network: ssl-bench list backbones, or any timm model name", role=ID,
                                   default_text=DATASET_DEFAULT)
    pretrained_file: str | None = setting(None, "start the backbone from these weights (.safetensors, or a torch "
                                          "state dict read with weights_only=True); the classifier starts fresh for "
                                          "the data set's classes", default_text="random initialization")
    steps: int | None = setting(None, "optimizer steps: the whole budget, whatever the number of processes", low=1,
                                default_text=DATASET_DEFAULT)
    batch_size: int | None = setting(None, "images per step, labeled + unlabeled; global: under torchrun each of N "
                                     "processes takes 1/N of them (divisible by N)", low=1,
                                     default_text=DATASET_DEFAULT)
    labeled_batch_size: int | None = setting(None, "labeled images per step (the rest of the batch is unlabeled); "
                                             "global, like --batch-size (divisible by N under torchrun)",
                                             low=1, default_text=DATASET_DEFAULT)
    val_size: int | None = setting(None, "validation images held out of the training set (stratified)", low=0,
                                   default_text=DATASET_DEFAULT)
    # Optimizer and learning-rate schedule (Mean Teacher paper, Appendix B.1 by default).
    optimizer: str = setting("adam", "optimizer", choices=("adam", "sgd"))
    # Searched by ``tune`` from Oliver et al. (2018)'s tuned Adam rates (3e-4 to 3e-3) up to 1e-2 for short CPU budgets.
    lr: float = setting(0.003, "maximum learning rate", low=0.0, low_open=True, search="log:3e-4:1e-2")
    beta1: float = setting(0.9, "Adam's beta1 before the ramp-down", low=0.0, high=1.0, high_open=True)
    beta1_rampdown: float = setting(0.5, "Adam's beta1 at the end of the lr ramp-down", low=0.0, high=1.0,
                                    high_open=True)
    beta2: float = setting(0.999, "Adam's beta2", low=0.0, high=1.0, high_open=True)
    momentum: float = setting(0.9, "SGD momentum", low=0.0, high=1.0, high_open=True)
    nesterov: bool = setting(True, "SGD with Nesterov momentum")
    weight_decay: float = setting(0.0, "weight decay (L2) of the optimizer", low=0.0)
    lr_schedule: str = setting("ramp", "ramp: sigmoid ramp-up and exp ramp-down; cosine: linear warm-up then cosine",
                               choices=("ramp", "cosine"))
    lr_rampup: int | None = setting(None, "lr ramp-up (ramp) or linear warm-up (cosine) steps", low=0,
                                    default_text="4/15 of --steps (ramp), 0 (cosine)")
    lr_rampdown: int | None = setting(None, "lr ramp-down steps at the end (ramp) or the cosine's length (cosine)",
                                      low=0, default_text="1/6 of --steps (ramp), 7/6 of --steps (cosine)")
    # Augmentation; None takes the data set's default.
    translate: int | None = setting(None, "max random translation in pixels (reflect padding)", low=0,
                                    default_text=DATASET_DEFAULT)
    flip: bool | None = setting(None, "random horizontal flips", default_text=DATASET_DEFAULT)
    noise: float | None = setting(None, "std of the Gaussian noise added to the normalized input", low=0.0,
                                  default_text=DATASET_DEFAULT)
    zca: bool = setting(False, "ZCA-whiten the inputs (the papers' CIFAR runs)")
    normalization: str = setting("fit", "input standardization: the training images' per-channel mean and std "
                                 "(fit), or the backbone's pretrained_cfg mean and std (backbone, for "
                                 "--pretrained-file)",
                                 choices=("fit", "backbone"))
    # Data set options.
    svhn_extra: bool = setting(False, "SVHN: add extra_32x32.mat to the unlabeled pool")
    image_size: int | None = setting(None, "resize every image to SIZE x SIZE as it is read (bicubic)", low=1,
                                     default_text="the images' own size")
    max_unlabeled: int | None = setting(None, "STL-10: read at most N images of unlabeled_X.bin", low=1,
                                        default_text="all")
    unlabeled_pool: int | None = setting(None, "cap the unlabeled stream at N training images: the labeled ones "
                                         "plus a seeded random draw", low=1, default_text="every training image")
    sync_bn: bool = setting(False, "under torchrun, BatchNorm statistics of the whole global batch "
                            "(SyncBatchNorm; GPUs only); no effect in one process")
    hparams: dict[str, Any] = setting(help="algorithm hyperparameters (--set KEY=VALUE; ssl-bench list algorithms)",
                                      flag="--set", default_factory=dict)
    # Execution: where, how fast and how visibly the run goes; never what it trains.
    eval_every: int | None = setting(None, "evaluate every N steps", role=EXEC, low=1,
                                     default_text=DATASET_DEFAULT)
    checkpoint_every: int | None = setting(None, "write a checkpoint every N steps", role=EXEC, low=1,
                                           default_text="--eval-every")
    data_dir: str | None = setting(None, "folder (or file) with the data set's official files", role=EXEC,
                                   default_text=DATASET_DEFAULT)
    out: str | None = setting(None, "run folder", role=EXEC,
                              default_text="runs/<dataset>-<labels>/<algo>/seed<seed>")
    device: str = setting("auto", "where to train", role=EXEC, choices=("auto", "cpu", "cuda"))
    threads: int | None = setting(1, "CPU threads for torch; results on a CPU depend on the thread count, and more "
                                  "threads than free cores slow a run down many times", role=EXEC, low=1)
    deterministic: bool = setting(False, "GPU: deterministic kernels, so a run and its resumed copy match "
                                  "(slower; the CPU needs no flag)", role=EXEC)
    precision: str = setting("fp32", "autocast precision of the forward passes; fp16 adds a gradient scaler",
                             role=EXEC, choices=("fp32", "bf16", "fp16"))
    compile: bool = setting(False, "torch.compile the student (and the teacher, where there is one)", role=EXEC)
    channels_last: bool = setting(False, "channels-last memory format for the networks and their inputs",
                                  role=EXEC)
    loggers: list[str] = setting(help="also send losses, lr and errors to this logger, under RUN_DIR/logs "
                                 "(wandb runs offline); repeatable", role=EXEC, flag="--logger",
                                 choices=LOGGER_NAMES, default_factory=list)
    log_every: int = setting(50, "loggers: the training losses and lr every N steps (every evaluation is logged too)",
                             role=EXEC, low=1)
    plugins: list[str] = setting(help="import MODULE (or a .py file) to register more algorithms, data sets or "
                                 "backbones; repeatable", role=EXEC, flag="--plugin", default_factory=list)
    preset: str | None = setting(None, "a shipped preset (ssl-bench list presets)", role=EXEC,
                                 default_text="the data set's")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def dataset_options(self) -> dict[str, Any]:
        return {"svhn_extra": self.svhn_extra, "image_size": self.image_size, "max_unlabeled": self.max_unlabeled}


CONFIG_KEYS = [info.name for info in settings_of(RunConfig)]
EXECUTION_KEYS = frozenset(names_with_role(RunConfig, Role.EXECUTION))
IDENTITY_KEYS = tuple(names_with_role(RunConfig, Role.IDENTITY))


@dataclass(frozen=True)
class Difference:
    """One setting that differs between a saved run and the run requested now."""

    key: str
    saved: Any
    requested: Any

    def __str__(self) -> str:
        return f"{self.key}: {self.saved!r} then, {self.requested!r} now"


# A resume may extend the step budget: the steps already taken are the same either way.
RESUMABLE_KEYS = ("steps",)


def differences(saved: RunConfig | dict[str, Any], requested: RunConfig | dict[str, Any],
                ignore: tuple[str, ...] = ()) -> list[Difference]:
    """The settings that make ``requested`` a different experiment from ``saved``, sorted by key.

    Execution settings never count, nor do the keys in ``ignore`` (a resume passes
    ``RESUMABLE_KEYS``). Hyperparameters are compared key by key (``hparams.ema_decay``). A key
    missing from a saved config.json (written before the key existed) counts as its default.
    """
    old = _as_dict(saved)
    new = _as_dict(requested)
    found = []
    for key in CONFIG_KEYS:
        if key in EXECUTION_KEYS or key in ignore:
            continue
        if key == "hparams":
            old_h, new_h = old.get(key) or {}, new.get(key) or {}
            found += [
                Difference(f"hparams.{name}", old_h.get(name), new_h.get(name))
                for name in sorted(set(old_h) | set(new_h))
                if _normal(old_h.get(name)) != _normal(new_h.get(name))
            ]
        elif _normal(old.get(key)) != _normal(new.get(key)):
            found.append(Difference(key, old.get(key), new.get(key)))
    return sorted(found, key=lambda d: d.key)


_DEFAULTS = RunConfig().to_json()


def _as_dict(config: RunConfig | dict[str, Any]) -> dict[str, Any]:
    values = config.to_json() if isinstance(config, RunConfig) else dict(config)
    return {**_DEFAULTS, **values}


def _normal(value: Any) -> Any:
    # JSON turns tuples into lists and 1.0 stays a float; compare numbers by value, not by type.
    if isinstance(value, tuple):
        return list(value)
    return value
