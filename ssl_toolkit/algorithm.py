"""The interface every semi-supervised algorithm implements, and what the trainer hands it.

Two step counts appear below, and each name says which: ``step_index`` is 0-based, the step being
taken now (the batch of step ``s`` is drawn with ``step_index == s``); ``steps_done`` is 1-based,
how many optimizer steps have finished (1 after the first).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ssl_toolkit.errors import UserInputError
from ssl_toolkit.losses import NO_LABEL, consistency_function
from ssl_toolkit.schedules import PAPER_RAMPUP_FRACTION, sigmoid_rampup
from ssl_toolkit.settings import setting

Output = Any  # what the student returns: a logit tensor for most algorithms, whatever the algorithm wraps it into


class Batch:
    """One training batch: the views an algorithm declared, of the same images, with labels and rows.

    ``y`` holds the class index of labeled images and -1 for unlabeled ones; ``index`` is each
    image's row in the training pool, for algorithms that keep per-sample state. Read a view with
    :meth:`view`; the batch remembers which views were read, so the conformance checks can tell a
    declared view that is never used. ``generator`` is the run's checkpointed generator: an
    algorithm that needs random numbers of its own (a random direction, a mixing coefficient) draws
    them from it, so a resumed run draws the same ones. The first ``num_labeled`` rows come from the
    labeled stream and the rest from the unlabeled stream (two-stream batches).
    """

    def __init__(self, views: dict[str, Tensor], y: Tensor, index: Tensor,
                 generator: torch.Generator | None = None, num_labeled: int | None = None) -> None:
        self._views = views
        self.y = y
        self.index = index
        self.generator = generator
        self.num_labeled = int((y != NO_LABEL).sum()) if num_labeled is None else num_labeled
        self.used_views: set[str] = set()

    def view(self, name: str) -> Tensor:
        """The batch's images as seen through view ``name`` (one of the algorithm's ``views``)."""
        if name not in self._views:
            raise KeyError(f"view {name!r} was not declared; this batch has: {', '.join(self._views)}")
        self.used_views.add(name)
        return self._views[name]

    @property
    def view_names(self) -> list[str]:
        return list(self._views)

    @property
    def unlabeled(self) -> slice:
        """The rows of the unlabeled stream (the batch's tail), as a slice: no host sync to apply it."""
        return slice(self.num_labeled, None)

    @property
    def unlabeled_mask(self) -> Tensor:
        """Boolean mask of the unlabeled rows, for element-wise use (``torch.where``, ``&``)."""
        return self.y == NO_LABEL


@dataclass
class StepInfo:
    """What the trainer tells ``post_step`` after each optimizer step.

    ``steps_done`` counts optimizer steps finished so far (1 after the first). ``epoch_ended`` is
    true on the step that finished a pass over the unlabeled stream. ``student_logits`` are the
    student's classification logits of this step, detached.

    ``gather(tensor)`` keeps per-sample state identical across processes when one run trains on
    several (``torchrun``): each process sees only its share of the global batch, and ``gather``
    returns every process's ``tensor`` concatenated along dim 0 in a fixed order, the same on every
    process (lengths along dim 0 may differ between processes). In one process it returns
    ``tensor`` itself. Gather every tensor that is written into shared state, row-aligned, e.g.
    ``index = info.gather(info.batch.index)`` and ``probs = info.gather(probs)`` (Temporal
    Ensembling). Every process calls ``post_step`` at the same step, so calls must not depend on
    the process's own data (always gather, if needed an empty tensor).
    """

    steps_done: int
    epoch_ended: bool
    batch: Batch
    student_logits: Tensor
    gather: Callable[[Tensor], Tensor] = field(default=lambda tensor: tensor, repr=False)


@dataclass
class DataContext:
    """Facts about the data and the run that an algorithm's state or defaults depend on.

    ``pool_size`` is the number of rows that ``Batch.index`` can address (per-sample buffers);
    ``labeled_share`` is the fraction of each batch that is labeled (``labeled_batch_size /
    batch_size``: the papers' M/N rule); ``total_steps`` is the run's step budget.
    """

    num_classes: int
    pool_size: int
    total_steps: int
    labeled_share: float


@dataclass
class AlgorithmConfig:
    """Base of every algorithm's hyperparameter dataclass.

    Subclasses add fields with :func:`ssl_toolkit.settings.setting`, giving each its paper default,
    help text, valid range and (optionally) the search space ``ssl-bench tune`` uses. Ranges are
    checked generically; override :meth:`validate` only for checks that need the data or the run.
    """

    def validate(self, context: DataContext) -> None:
        """Raise UserInputError naming a hyperparameter that does not fit this run."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class SSLAlgorithm(nn.Module):
    """A semi-supervised algorithm: which views it needs, what target the student is pulled toward, how.

    Each step the trainer builds the declared ``views`` of the batch, computes
    ``output = student(batch.view(student_view))``, the masked cross-entropy of
    :meth:`class_logits` of that output, and adds ``consistency_weight(step_index) *
    consistency_loss(output, teacher_targets(batch, output), batch)`` plus :meth:`auxiliary_loss`.
    It then steps the optimizer and calls :meth:`post_step`. Because the algorithm is an
    ``nn.Module`` holding the student (and any teacher or per-sample buffers), its ``state_dict``
    is its whole state. An algorithm never draws from the global random state: its views come from
    the run's checkpointed generator, and any random number of its own (a random direction, a
    mixing coefficient) is drawn from that generator, ``batch.generator``, so a resumed run is
    bit-exact.

    ``views`` maps each view name to a registered augmentation policy
    (:func:`ssl_toolkit.data.augment.list_policies`: ``weak`` is the data set's translate/flip/noise
    of the papers, ``strong`` is FixMatch's flip/translate, RandAugment and Cutout); the trainer
    builds exactly these, and ``student_view`` names the one the student trains on.
    ``targets_need_gradient`` says that :meth:`teacher_targets` returns targets that carry the
    student's graph on purpose (the Π-model); the conformance checks reject such targets otherwise.

    Example::

        @register_algorithm("my_algo")
        class MyAlgo(ConsistencyAlgorithm):
            Config = MyAlgoConfig
            views = {"student": "weak", "teacher": "weak"}
            def teacher_targets(self, batch, output): ...

    References:
        Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017;
        Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017.
    """

    Config: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig
    views: ClassVar[dict[str, str]] = {"student": "weak"}
    student_view: ClassVar[str] = "student"
    targets_need_gradient: ClassVar[bool] = False
    name: ClassVar[str] = ""

    def __init__(self, student: nn.Module, config: AlgorithmConfig, context: DataContext) -> None:
        super().__init__()
        self.student = student
        self.config = config
        self.context = context

    @classmethod
    def check_declaration(cls) -> None:
        """Raise UserInputError if the class's declarations do not fit together."""
        if not (dataclasses.is_dataclass(cls.Config) and issubclass(cls.Config, AlgorithmConfig)):
            raise UserInputError(f"{cls.__qualname__}.Config must be a dataclass subclassing AlgorithmConfig")
        if cls.student_view not in cls.views:
            raise UserInputError(f"{cls.__qualname__}.student_view {cls.student_view!r} is not one of its views "
                                 f"({', '.join(cls.views)})")

    def class_logits(self, output: Output) -> Tensor:
        """The classification logits in the student's (or an evaluated model's) output."""
        return output

    def teacher_targets(self, batch: Batch, output: Output) -> Any:
        """The targets the student is pulled toward, or None for no consistency term."""
        return None

    def consistency_loss(self, output: Output, targets: Any, batch: Batch) -> Tensor:
        """Distance between the student's output and the targets, before the ramped weight."""
        raise NotImplementedError(f"{type(self).__name__} returns targets but defines no consistency_loss")

    def consistency_weight(self, step_index: int) -> float:
        """The weight ``w`` of the consistency term at this step; 0 for algorithms without one."""
        return 0.0

    def auxiliary_loss(self, output: Output) -> Tensor | None:
        """An extra loss term on the student's output (e.g. between two heads), or None."""
        return None

    def post_step(self, info: StepInfo) -> None:
        """Update state after the optimizer step (EMA teacher, per-sample buffers).

        Under torchrun every process runs this on its share of the batch: state kept outside the
        evaluated models (a per-sample buffer) must be updated from ``info.gather``-ed tensors so it
        stays identical everywhere. The engine itself averages the evaluated models' floating-point
        buffers (BatchNorm statistics) over processes after this hook.
        """

    def eval_models(self) -> dict[str, nn.Module]:
        """The models to evaluate, by name. The student is always one of them."""
        return {"student": self.student}

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimizer updates: the student's."""
        return list(self.student.parameters())


@dataclass
class ConsistencyWeightConfig(AlgorithmConfig):
    """The weight of a consistency term: its maximum ``w_max`` and its sigmoid ramp-up.

    ``consistency_weight=None`` applies the papers' rule ``w_max = label_fraction_scale * M / N``,
    where M / N is the share of labeled images in a batch: the papers drew batches from the whole
    training set, so the expected share was (labeled images) / (training images); with two-stream
    batches it is ``labeled_batch_size / batch_size``. ``consistency_rampup=None`` ramps up over
    the papers' share of the run (40k of 150k steps); 0 applies ``w_max`` from the first step.
    """

    consistency_weight: float | None = setting(
        None, "w_max of the consistency term; None applies label_fraction_scale x labeled share", low=0.0,
        search="log:0.3:100",
    )
    label_fraction_scale: float = setting(100.0, "w_max = this x labeled share when consistency_weight is None",
                                          low=0.0)
    consistency_rampup: int | None = setting(None, "sigmoid ramp-up of the weight, in steps; None: 4/15 of the run",
                                             low=0)

    def validate(self, context: DataContext) -> None:
        if self.consistency_rampup is not None and self.consistency_rampup > context.total_steps:
            raise UserInputError(f"hyperparameter consistency_rampup={self.consistency_rampup} is out of range; "
                                 f"valid: [0, {context.total_steps}] (the run's --steps)")

    def max_weight(self, context: DataContext) -> float:
        if self.consistency_weight is not None:
            return self.consistency_weight
        return self.label_fraction_scale * context.labeled_share

    def rampup_steps(self, context: DataContext) -> int:
        if self.consistency_rampup is not None:
            return self.consistency_rampup
        return round(PAPER_RAMPUP_FRACTION * context.total_steps)


@dataclass
class ConsistencyConfig(ConsistencyWeightConfig):
    """Hyperparameters of consistency-regularization methods: the ramped weight and the distance.

    ``consistency`` picks the distance between the student's softmax and the target's: ``mse``
    (the papers' default) or ``kl``.
    """

    consistency: str = setting("mse", "distance: mse of softmaxes, or kl", choices=("mse", "kl"))


class ConsistencyAlgorithm(SSLAlgorithm):
    """An SSLAlgorithm with the papers' ramped consistency weight, and softmax MSE (or KL) as distance.

    Subclass it (it is a base class, not a mixin, so no base order can lose the weight). Its Config
    must subclass :class:`ConsistencyWeightConfig`; the default :meth:`consistency_loss` reads the
    distance from a :class:`ConsistencyConfig`, so a Config without ``consistency`` must come with
    its own ``consistency_loss``.
    """

    Config: ClassVar[type[AlgorithmConfig]] = ConsistencyConfig
    config: ConsistencyConfig

    @classmethod
    def check_declaration(cls) -> None:
        super().check_declaration()
        if not issubclass(cls.Config, ConsistencyWeightConfig):
            raise UserInputError(f"{cls.__qualname__}.Config must subclass ConsistencyWeightConfig")
        has_own_loss = cls.consistency_loss is not ConsistencyAlgorithm.consistency_loss
        if not issubclass(cls.Config, ConsistencyConfig) and not has_own_loss:
            raise UserInputError(f"{cls.__qualname__} must define consistency_loss: its Config has no 'consistency' "
                                 f"distance (subclass ConsistencyConfig for the default mse/kl)")

    def consistency_weight(self, step_index: int) -> float:
        ramp = sigmoid_rampup(step_index, self.config.rampup_steps(self.context))
        return self.config.max_weight(self.context) * ramp

    def consistency_loss(self, output: Output, targets: Any, batch: Batch) -> Tensor:
        return consistency_function(self.config.consistency)(output, targets)
