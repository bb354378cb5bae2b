"""Conformance checks for any SSLAlgorithm: a plugin author's one call, :func:`check_algorithm`.

Every registered algorithm gets them through the registry-parametrized tests; a plugin calls
``check_algorithm(MyAlgo)`` (or its registered name) from its own test suite. Each failed check is
an ``AssertionError`` whose message names the algorithm and what went wrong.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ssl_toolkit.algorithm import Batch, SSLAlgorithm, StepInfo
from ssl_toolkit.checkpoint import tensors_in
from ssl_toolkit.config import resolve_run_config
from ssl_toolkit.registry import get_algorithm, registered
from ssl_toolkit.runner import resolve_for_resume
from ssl_toolkit.trainer import DivergenceError, Trainer

# A run on the embedded digits set small enough to take a second or two.
TINY_RUN = {"dataset": "digits", "labels": 20, "batch_size": 32, "labeled_batch_size": 8, "val_size": 50, "threads": 1}
# The conformance run: 120 unlabeled images per batch, so an epoch (a pass over the unlabeled
# stream) ends after 11 steps, inside the run: per-sample state changes at an epoch's end too.
CHECK_RUN = {"batch_size": 128, "labeled_batch_size": 8}
CHECK_STEPS = 12
RESUME_AT = 6
# The learning check: digits with 50 labels at the digits-cpu preset's batches, two thirds of its budget.
# Measured on one thread (docs/extending.md, "The conformance checks"): supervised errs 10.9% there and
# each shipped SSL algorithm at least 1.1 points less; an algorithm whose unlabeled term does nothing
# ties supervised, or differs by the noise of other augmentation draws.
LEARNING_RUN = {"dataset": "digits", "labels": 50, "seed": 0, "threads": 1}
LEARNING_STEPS = 1000
LEARNING_MARGIN_POINTS = 1.0


def tiny_run_flags(steps: int = 6, eval_every: int | None = None) -> list[str]:
    """``ssl-bench run`` flags for the tiny digits run (add --algo and --out)."""
    values = {**TINY_RUN, "steps": steps, "eval_every": eval_every or steps}
    return [token for key, value in values.items() for token in (f"--{key.replace('_', '-')}", str(value))] + [
        "--quiet"
    ]


def tiny_trainer(algo: str, out: str | Path, steps: int = 6, **overrides: Any) -> Trainer:
    """A Trainer for ``algo`` on the embedded digits set, small enough to run in a second or two."""
    values = {**TINY_RUN, "algo": algo, "steps": steps, "eval_every": steps, "out": str(out)}
    values.update(overrides)
    return Trainer(resolve_run_config(values))


def check_algorithm(
    algorithm: str | type[SSLAlgorithm],
    *,
    learning: bool = True,
    learning_hparams: dict[str, Any] | None = None,
    allow_unused_views: Iterable[str] = (),
) -> None:
    """Assert that ``algorithm`` (a class, or a registered name) keeps the interface's promises.

    1. Every loss is finite and training changes the student.
    2. Targets from ``teacher_targets`` carry no gradient, unless the class declares
       ``targets_need_gradient = True``; no evaluated model other than the student gets gradients.
    3. The declared ``views`` are the views the algorithm reads (``allow_unused_views`` names ones
       it may leave unread).
    4. A consistency term is not silently switched off: an algorithm that returns targets has a
       non-zero ``consistency_weight`` at some step of a run its ramp-up fits in.
    5. Its state round-trips through a checkpoint: a run stopped at step 6 and resumed ends with
       every tensor of its state, the optimizer's and the generator's equal to an uninterrupted run's.
    6. With ``learning=True``: it learns from unlabeled images. On digits with 50 labels and 1000
       steps its test error is at least 1 point below supervised training's, for every evaluated
       model (two runs of 20-60 s on one CPU thread). ``learning_hparams`` set hyperparameters for
       this short run, where a published value suits only long ones (an EMA decay of 0.999 averages
       over the whole run).

    An unregistered class is registered for the duration of the check only.
    """
    cls = algorithm if isinstance(algorithm, type) else get_algorithm(algorithm)
    with registered(cls) as name, tempfile.TemporaryDirectory() as tmp:
        label = cls.__qualname__ if name.startswith("unregistered.") else name
        reference = _check_training(name, label, Path(tmp) / "reference", set(allow_unused_views))
        _check_resume(name, label, Path(tmp) / "resumed", reference)
        if learning:
            _check_learning(name, label, Path(tmp), learning_hparams or {})


# -- 1-4: one observed run ---------------------------------------------------------------------------
class _Recorder:
    """Wraps an algorithm's ``teacher_targets`` and ``post_step`` to see what each step did."""

    def __init__(self, algorithm: SSLAlgorithm) -> None:
        self.targets_returned: list[bool] = []
        self.targets_with_gradient = 0
        self.views_read: set[str] = set()
        original_targets, original_post_step = algorithm.teacher_targets, algorithm.post_step

        def teacher_targets(batch: Batch, output: Any) -> Any:
            targets = original_targets(batch, output)
            self.targets_returned.append(targets is not None)
            self.targets_with_gradient += any(t.requires_grad for t in tensors_in(targets))
            return targets

        def post_step(info: StepInfo) -> None:
            original_post_step(info)
            self.views_read |= info.batch.used_views

        # Instance attributes shadow the class's methods for this object only.
        algorithm.teacher_targets = teacher_targets
        algorithm.post_step = post_step


def _check_training(name: str, label: str, out: Path, allow_unused_views: set[str]) -> Trainer:
    trainer = tiny_trainer(name, out, steps=CHECK_STEPS, **CHECK_RUN)
    algorithm = trainer.algorithm
    recorder = _Recorder(algorithm)
    student_ids = {id(p) for p in algorithm.student.parameters()}
    before = copy.deepcopy(algorithm.student.state_dict())
    weights = []
    algorithm.train()
    for step in range(CHECK_STEPS):
        try:
            values = trainer.train_step(step)
        except DivergenceError as error:
            raise AssertionError(f"{label}: {error}") from None
        trainer.step = step + 1
        weights.append(values["weight"])
        for model_name, model in algorithm.eval_models().items():
            if model_name == "student":
                continue
            hit = [n for n, p in model.named_parameters()
                   if id(p) not in student_ids and p.grad is not None and bool(p.grad.abs().sum() > 0)]
            assert not hit, (f"{label}: the evaluated model {model_name!r} got gradients (in {hit[0]}); compute "
                             f"its outputs under torch.no_grad() or from detached inputs")
    after = algorithm.student.state_dict()
    assert any(before[k].dtype.is_floating_point and not torch.equal(before[k], after[k]) for k in before), (
        f"{label}: no student parameter changed in {CHECK_STEPS} training steps"
    )
    if recorder.targets_with_gradient and not type(algorithm).targets_need_gradient:
        raise AssertionError(
            f"{label}: teacher_targets returned targets that require grad at {recorder.targets_with_gradient} of "
            f"{CHECK_STEPS} steps; detach them (or compute them under torch.no_grad()), or declare "
            f"targets_need_gradient = True if the gradient through the target is the algorithm's (as the Π-model's)"
        )
    unused = set(type(algorithm).views) - recorder.views_read - allow_unused_views
    assert not unused, (f"{label}: declares view(s) {', '.join(sorted(unused))} but never reads them with "
                        f"batch.view(); remove them from `views` (each costs an augmentation per step)")
    if any(recorder.targets_returned) and not any(weights):
        raise AssertionError(
            f"{label}: teacher_targets returned targets, but consistency_weight() was 0 at every one of "
            f"{CHECK_STEPS} steps, so the consistency term never trains; define consistency_weight (or subclass "
            f"ConsistencyAlgorithm for the papers' ramped weight)"
        )
    return trainer


# -- 5: exact resume -------------------------------------------------------------------------------
def _check_resume(name: str, label: str, out: Path, reference: Trainer) -> None:
    first = tiny_trainer(name, out, steps=CHECK_STEPS, **CHECK_RUN)
    first.run(should_stop=lambda: first.step >= RESUME_AT)
    assert first.step == RESUME_AT, f"{label}: the run did not stop at step {RESUME_AT} (it ran to {first.step})"
    # As `ssl-bench resume` does: the config comes back from config.json, so every hyperparameter must survive it.
    resumed = Trainer(resolve_for_resume({}, out), resume=True)
    resumed.run()
    hint = (f"{label}: resumed from the checkpoint of step {RESUME_AT}, a {CHECK_STEPS}-step run ends with a "
            f"different {{}} than an uninterrupted one; keep all state in parameters or registered buffers "
            f"(so state_dict() holds it) and draw random numbers only from batch.generator")
    expected, got = reference.algorithm.state_dict(), resumed.algorithm.state_dict()
    assert set(expected) == set(got), hint.format("set of state_dict() keys")
    for key, tensor in expected.items():
        assert torch.equal(tensor, got[key]), hint.format(f"state_dict() entry {key!r}")
    expected_opt, got_opt = reference.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for index, state in expected_opt.items():
        for key, value in state.items():
            same = torch.equal(torch.as_tensor(value), torch.as_tensor(got_opt[index][key]))
            assert same, hint.format(f"optimizer state {key!r} of parameter {index}")
    assert torch.equal(reference.augment_generator.get_state(), resumed.augment_generator.get_state()), (
        hint.format("augmentation generator state")
    )


# -- 6: learning -----------------------------------------------------------------------------------
def _final_errors(algo: str, out: Path, hparams: dict[str, Any]) -> dict[str, float]:
    values = {**LEARNING_RUN, "algo": algo, "steps": LEARNING_STEPS, "eval_every": LEARNING_STEPS, "out": str(out),
              "hparams": hparams}
    return Trainer(resolve_run_config(values)).run()["test_error"]


def _check_learning(name: str, label: str, tmp: Path, hparams: dict[str, Any]) -> None:
    supervised = _final_errors("supervised", tmp / "learning-supervised", {})["student"]
    for model, error in _final_errors(name, tmp / "learning", hparams).items():
        assert error <= supervised - LEARNING_MARGIN_POINTS, (
            f"{label}: {model} test error {error:.2f}% on digits with 50 labels after {LEARNING_STEPS} steps is not "
            f"{LEARNING_MARGIN_POINTS} point(s) below supervised training's {supervised:.2f}%; the unlabeled "
            f"images do not help (is the consistency term wired, weighted and pointing the right way?)"
        )


__all__ = ["check_algorithm", "tiny_run_flags", "tiny_trainer"]
