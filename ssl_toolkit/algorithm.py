"""The interface every semi-supervised algorithm implements, and what the trainer hands it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from ssl_toolkit.errors import UserInputError


@dataclass
class Batch:
    """One training batch: two independently augmented views of the same images.

    ``y`` holds the class index of labeled images and -1 for unlabeled ones; ``index`` is each
    image's row in the training pool, for algorithms that keep per-sample state.
    """

    x_student: Tensor
    x_teacher: Tensor
    y: Tensor
    index: Tensor


@dataclass
class StepInfo:
    """What the trainer tells ``post_step`` after each optimizer step.

    ``step`` counts optimizer steps done so far (1 after the first). ``epoch_ended`` is true on the
    step that finished a pass over the unlabeled stream; ``epoch`` is the number of passes finished.
    """

    step: int
    total_steps: int
    epoch: int
    epoch_ended: bool
    batch: Batch
    student_logits: Tensor


@dataclass
class DataContext:
    """Facts about the data that an algorithm's defaults may depend on (the paper's M/N rule).

    ``num_unlabeled`` is the unlabeled pool (labeled images included, as in the papers);
    ``pool_size`` is the number of rows that ``Batch.index`` can address; ``labeled_share`` is the
    fraction of each batch that is labeled (``labeled_batch_size / batch_size``).
    """

    num_classes: int
    num_labeled: int
    num_unlabeled: int
    pool_size: int
    total_steps: int
    steps_per_epoch: int
    labeled_share: float


@dataclass
class AlgorithmConfig:
    """Base of every algorithm's hyperparameter dataclass. Subclasses add fields with paper defaults."""

    def validate(self, context: DataContext) -> None:
        """Raise UserInputError naming a hyperparameter whose value is out of range."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_range(name: str, value: float, low: float | None, high: float | None, *, high_open: bool = False) -> None:
    """Raise UserInputError unless ``low <= value <= high`` (``< high`` with ``high_open``)."""
    too_low = low is not None and value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}{')' if high_open else ']'}"
        raise UserInputError(f"hyperparameter {name}={value} is out of range; valid: {bounds}")


class SSLAlgorithm(nn.Module):
    """A semi-supervised algorithm: what target the student is pulled toward, and how.

    The trainer computes ``student(x_student)``, asks :meth:`teacher_targets` for targets, adds
    ``w(t) * consistency_loss(...)`` to the masked cross-entropy, steps the optimizer and then calls
    :meth:`post_step`. Because the algorithm is an ``nn.Module`` holding the student (and any
    teacher or per-sample buffers), its ``state_dict`` is its whole state.

    Subclasses set ``Config`` to a dataclass of hyperparameters and register themselves::

        @register_algorithm("my_algo")
        class MyAlgo(SSLAlgorithm):
            Config = MyAlgoConfig
            def teacher_targets(self, batch, student_logits): ...
            def consistency_loss(self, student_logits, targets, batch): ...

    References:
        Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017;
        Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017.
    """

    Config: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig
    name: ClassVar[str] = ""

    def __init__(self, student: nn.Module, config: AlgorithmConfig, context: DataContext) -> None:
        super().__init__()
        self.student = student
        self.config = config
        self.context = context

    def teacher_targets(self, batch: Batch, student_logits: Tensor) -> Tensor | None:
        """The targets the student is pulled toward, or None for no consistency term."""
        return None

    def consistency_loss(self, student_logits: Tensor, targets: Tensor, batch: Batch) -> Tensor:
        """Distance between the student's outputs and the targets, before the ramped weight."""
        raise NotImplementedError(f"{type(self).__name__} returns targets but defines no consistency_loss")

    def consistency_weight(self, step: int) -> float:
        """The weight ``w(step)`` of the consistency term; 0 for algorithms without one."""
        return 0.0

    def post_step(self, info: StepInfo) -> None:
        """Update state after the optimizer step (EMA teacher, per-sample buffers)."""

    def auxiliary_loss(self, student_output: Tensor | tuple[Tensor, ...]) -> Tensor | None:
        """An extra loss term on the student's raw output (all heads), or None."""
        return None

    @classmethod
    def backbone_options(cls, config: AlgorithmConfig) -> dict[str, Any]:
        """Keyword arguments the backbone needs for this algorithm (e.g. ``num_heads=2``)."""
        return {}

    def eval_models(self) -> dict[str, nn.Module]:
        """The models to evaluate, by name. The student is always one of them."""
        return {"student": self.student}

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimizer updates: the student's."""
        return list(self.student.parameters())


# Paper ratio: the ConvNet runs ramp up over 40k of 150k steps (Laine & Aila: 80 of 300 epochs).
DEFAULT_RAMPUP_FRACTION = 40_000 / 150_000


@dataclass
class ConsistencyConfig(AlgorithmConfig):
    """Hyperparameters shared by consistency-regularization methods.

    ``consistency_weight=None`` applies the papers' rule ``w_max = label_fraction_scale * M / N``,
    where M / N is the share of labeled images in a batch: the papers drew batches from the whole
    training set, so the expected share was (labeled images) / (training images); with two-stream
    batches it is ``labeled_batch_size / batch_size``. ``consistency_rampup=None`` ramps up over
    the papers' share of the run (40k of 150k steps).
    """

    consistency_weight: float | None = None
    label_fraction_scale: float = 100.0
    consistency_rampup: int | None = None
    consistency: str = "mse"

    def validate(self, context: DataContext) -> None:
        if self.consistency_weight is not None:
            check_range("consistency_weight", self.consistency_weight, 0.0, None)
        check_range("label_fraction_scale", self.label_fraction_scale, 0.0, None)
        if self.consistency_rampup is not None:
            check_range("consistency_rampup", self.consistency_rampup, 0, context.total_steps)
        if self.consistency not in ("mse", "kl"):
            raise UserInputError(f"hyperparameter consistency={self.consistency!r} is not valid; valid: mse, kl")

    def max_weight(self, context: DataContext) -> float:
        if self.consistency_weight is not None:
            return self.consistency_weight
        return self.label_fraction_scale * context.labeled_share

    def rampup_steps(self, context: DataContext) -> int:
        if self.consistency_rampup is not None:
            return self.consistency_rampup
        return round(DEFAULT_RAMPUP_FRACTION * context.total_steps)
