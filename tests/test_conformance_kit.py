"""The conformance kit catches each broken promise: every class here breaks one, and the kit must say which."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from ssl_toolkit import AlgorithmConfig, SSLAlgorithm, list_algorithms
from ssl_toolkit.algorithms.mean_teacher import MeanTeacher
from ssl_toolkit.algorithms.pi_model import PiModel
from ssl_toolkit.losses import softmax_mse
from ssl_toolkit.schedules import ema_decay_at
from ssl_toolkit.testing import check_algorithm


class TeacherThatLearns(MeanTeacher):
    """Copies the Π-model's declaration, but its teacher is an evaluated model that now gets gradients."""

    targets_need_gradient = True

    def __init__(self, student, config, context):
        super().__init__(student, config, context)
        self.teacher.requires_grad_(True)

    def teacher_targets(self, batch, output):
        return self.teacher(batch.view("teacher"))


class UndeclaredGradientTarget(PiModel):
    """The Π-model's target without its declaration: an accidental gradient through the target."""

    targets_need_gradient = False


class UnreadView(PiModel):
    views = {"student": "weak", "teacher": "weak", "strong": "strong"}


@dataclass
class NoWeightConfig(AlgorithmConfig):
    pass


class ForgottenWeight(SSLAlgorithm):
    """Returns targets and a loss but keeps SSLAlgorithm's zero consistency_weight (the old mixin trap)."""

    Config = NoWeightConfig
    views = {"student": "weak", "teacher": "weak"}

    def teacher_targets(self, batch, output):
        with torch.no_grad():
            return self.student(batch.view("teacher"))

    def consistency_loss(self, output, targets, batch):
        return softmax_mse(output, targets)


class StepCountOutsideState(MeanTeacher):
    """Counts steps in a plain attribute, which state_dict() does not hold: a resume restarts the count."""

    def __init__(self, student, config, context):
        super().__init__(student, config, context)
        self.steps_seen = 0

    def decay_at(self, steps_done):
        return ema_decay_at(self.steps_seen, self.config.ema_decay)

    def post_step(self, info):
        self.steps_seen += 1
        super().post_step(info)


@pytest.mark.parametrize("cls, message", [
    (TeacherThatLearns, "evaluated model 'teacher' got gradients"),
    (UndeclaredGradientTarget, "returned targets that require grad"),
    (UnreadView, "declares view\\(s\\) strong but never reads them"),
    (ForgottenWeight, "consistency_weight\\(\\) was 0 at every one"),
    (StepCountOutsideState, "resumed from the checkpoint of step 6, a 12-step run ends with a different"),
])
def test_the_kit_fails_a_broken_algorithm_and_names_the_broken_promise(cls, message):
    with pytest.raises(AssertionError, match=message) as failure:
        check_algorithm(cls, learning=False)
    assert cls.__qualname__ in str(failure.value)


def test_a_class_checked_without_registering_it_leaves_the_registry_as_it_was():
    before = list_algorithms()
    with pytest.raises(AssertionError):
        check_algorithm(UnreadView, learning=False)
    assert list_algorithms() == before
    assert UnreadView.name == "pi_model"  # inherited, not overwritten


def test_unused_views_may_be_allowed_by_name():
    check_algorithm(UnreadView, learning=False, allow_unused_views=("strong",))
