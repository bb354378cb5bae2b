"""Where gradients flow, and what each algorithm's target is built from (the papers' claims)."""

import pytest
import torch

from ssl_toolkit.algorithm import Batch, StepInfo
from ssl_toolkit.losses import NO_LABEL
from ssl_toolkit.testing import tiny_trainer


def _views(batch):
    return {name: batch.view(name) for name in batch.view_names}


def _unlabeled_batch(trainer, step=0):
    batch = trainer.make_batch(step)
    return Batch(_views(batch), torch.full_like(batch.y, NO_LABEL), batch.index)


def _consistency(trainer, batch):
    algorithm = trainer.algorithm
    output = algorithm.student(batch.view("student"))
    return algorithm.consistency_loss(output, algorithm.teacher_targets(batch, output), batch)


def test_mean_teacher_teacher_gets_no_gradient(tmp_path):
    trainer = tiny_trainer("mean_teacher", tmp_path / "run")
    loss = _consistency(trainer, _unlabeled_batch(trainer))
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in trainer.algorithm.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.algorithm.student.parameters())


def test_mean_teacher_teacher_sees_its_own_view_not_the_students(tmp_path):
    trainer = tiny_trainer("mean_teacher", tmp_path / "run")
    seen = []
    trainer.algorithm.teacher.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    batch = trainer.make_batch(0)
    trainer.algorithm.teacher_targets(batch, trainer.algorithm.student(batch.view("student")))
    assert seen and seen[0] is batch.view("teacher")
    assert not torch.equal(batch.view("teacher"), batch.view("student"))


def test_consistency_alone_on_unlabeled_images_moves_the_student(tmp_path):
    # The published toolkit whose teacher compared with itself produced a zero gradient here.
    for algo in ("mean_teacher", "pi_model"):
        trainer = tiny_trainer(algo, tmp_path / algo)
        student = trainer.algorithm.student
        before = [p.detach().clone() for p in student.parameters()]
        loss = _consistency(trainer, _unlabeled_batch(trainer))
        assert loss.item() > 0, f"{algo}: consistency between two views is zero"
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
        moved = sum(not torch.equal(b, p) for b, p in zip(before, student.parameters(), strict=False))
        assert moved > 0, f"{algo}: consistency on unlabeled images changed no student parameter"


def test_pi_model_gradient_flows_through_both_branches(tmp_path):
    trainer = tiny_trainer("pi_model", tmp_path / "run")
    batch = _unlabeled_batch(trainer)
    x_student = batch.view("student").clone().requires_grad_(True)
    x_teacher = batch.view("teacher").clone().requires_grad_(True)
    batch = Batch({"student": x_student, "teacher": x_teacher}, batch.y, batch.index)
    _consistency(trainer, batch).backward()
    assert x_student.grad is not None and x_student.grad.abs().sum() > 0
    assert x_teacher.grad is not None and x_teacher.grad.abs().sum() > 0


def test_temporal_ensembling_targets_carry_no_gradient(tmp_path):
    trainer = tiny_trainer("temporal_ensembling", tmp_path / "run")
    algorithm = trainer.algorithm
    algorithm.ensemble.fill_(0.1)
    algorithm.fold_count.fill_(1)
    batch = trainer.make_batch(0)
    logits = algorithm.student(batch.view("student"))
    targets = algorithm.teacher_targets(batch, logits)
    assert not targets.requires_grad
    algorithm.consistency_loss(logits, targets, batch).backward()
    assert algorithm.ensemble.grad is None


def test_temporal_ensembling_buffer_and_bias_correction_by_hand(tmp_path):
    trainer = tiny_trainer("temporal_ensembling", tmp_path / "run")
    algorithm = trainer.algorithm
    alpha = algorithm.config.ensemble_momentum
    assert alpha == 0.6
    index = torch.tensor([3, 5])
    batch = Batch({"student": torch.zeros(2)}, torch.full((2,), NO_LABEL), index)
    z1 = torch.tensor([[2.0, 0.0] + [0.0] * 8, [0.0, 1.0] + [0.0] * 8])
    z2 = torch.tensor([[0.0, 2.0] + [0.0] * 8, [1.0, 0.0] + [0.0] * 8])

    def step(logits, ended):
        algorithm.post_step(StepInfo(steps_done=1, epoch_ended=ended, batch=batch, student_logits=logits))

    p1, p2 = torch.softmax(z1, 1), torch.softmax(z2, 1)
    step(z1, ended=False)
    assert algorithm.fold_count[index].tolist() == [0, 0], "the ensemble changes only at an epoch's end"
    step(z1, ended=True)
    assert torch.allclose(algorithm.ensemble[index], (1 - alpha) * p1)
    assert torch.allclose(algorithm.teacher_targets(batch, z1), p1)  # Z / (1 - α^1) = z
    step(z2, ended=True)
    expected_z = alpha * (1 - alpha) * p1 + (1 - alpha) * p2
    assert torch.allclose(algorithm.ensemble[index], expected_z)
    assert torch.allclose(algorithm.teacher_targets(batch, z2), expected_z / (1 - alpha**2))
    assert algorithm.fold_count[3] == 2 and algorithm.fold_count[0] == 0


def test_temporal_ensembling_has_no_consistency_before_its_first_epoch(tmp_path):
    trainer = tiny_trainer("temporal_ensembling", tmp_path / "run")
    batch = trainer.make_batch(0)
    logits = trainer.algorithm.student(batch.view("student"))
    assert _consistency(trainer, batch).item() == 0.0
    assert logits.shape[0] == batch.y.shape[0]


def test_mean_teacher_ema_follows_min_formula_and_teacher_differs_from_student(tmp_path):
    trainer = tiny_trainer("mean_teacher", tmp_path / "run", steps=20)
    algorithm = trainer.algorithm
    assert algorithm.decay_at(1) == 0.5
    assert algorithm.decay_at(3) == pytest.approx(0.75)
    teacher_before = [p.clone() for p in algorithm.teacher.parameters()]
    student_before = [p.detach().clone() for p in algorithm.student.parameters()]
    trainer.algorithm.train()
    trainer.train_step(0)
    a = algorithm.decay_at(1)
    for t0, s1, t1 in zip(teacher_before, algorithm.student.parameters(), algorithm.teacher.parameters(), strict=False):
        assert torch.allclose(t1, a * t0 + (1 - a) * s1.detach(), atol=1e-6)
    for step in range(1, 5):
        trainer.train_step(step)
    differs = any(
        not torch.equal(t, s)
        for t, s in zip(algorithm.teacher.parameters(), algorithm.student.parameters(), strict=False)
    )
    assert differs and any(
        not torch.equal(b, s) for b, s in zip(student_before, algorithm.student.parameters(), strict=False)
    )


def test_mean_teacher_decay_switches_after_rampup(tmp_path):
    trainer = tiny_trainer(
        "mean_teacher",
        tmp_path / "run",
        steps=100000,
        hparams={"consistency_rampup": 10, "ema_decay_after_rampup": 0.999},
        eval_every=100000,
    )
    algorithm = trainer.algorithm
    assert algorithm.decay_at(9) == pytest.approx(0.9)
    assert algorithm.decay_at(5000) == 0.999
    assert algorithm.decay_at(9999) == pytest.approx(0.999)


def test_mean_teacher_logit_distance_uses_two_heads_and_adds_their_distance(tmp_path):
    trainer = tiny_trainer("mean_teacher", tmp_path / "run", hparams={"logit_distance_cost": 0.01})
    algorithm = trainer.algorithm
    batch = trainer.make_batch(0)
    head1, head2 = algorithm.student(batch.view("student"))
    assert head1.shape == head2.shape == (len(batch.y), 10)
    assert not torch.equal(head1, head2), "the second head is initialized independently"
    assert torch.equal(algorithm.class_logits((head1, head2)), head1)
    expected = 0.01 * ((head1 - head2) ** 2).sum() / 10 / len(batch.y)
    assert torch.allclose(algorithm.auxiliary_loss((head1, head2)), expected)
    algorithm.eval()
    teacher_head1, _ = algorithm.teacher(batch.view("teacher"))
    # The target is the teacher's first (classification) head.
    assert torch.equal(algorithm.teacher_targets(batch, (head1, head2)), teacher_head1)
    trainer.algorithm.train()
    assert torch.isfinite(torch.tensor(trainer.train_step(0)["class_loss"]))


def test_mean_teacher_logit_distance_consistency_pulls_head2_not_head1(tmp_path):
    trainer = tiny_trainer("mean_teacher", tmp_path / "run", hparams={"logit_distance_cost": 0.01})
    algorithm = trainer.algorithm
    batch = _unlabeled_batch(trainer)
    head1, head2 = algorithm.student(batch.view("student"))
    head1.retain_grad()
    head2.retain_grad()
    algorithm.consistency_loss((head1, head2), algorithm.teacher_targets(batch, (head1, head2)), batch).backward()
    assert head1.grad is None or head1.grad.abs().sum() == 0
    assert head2.grad is not None and head2.grad.abs().sum() > 0


def test_two_heads_wrapper_matches_the_backbone_on_head_one_for_every_backbone_kind():
    import timm

    from ssl_toolkit.algorithms.mean_teacher import TwoHeads

    for name, shape in (("convnet_tiny", (2, 1, 8, 8)), ("wrn28_2", (2, 3, 32, 32))):
        backbone = timm.create_model(name, num_classes=10, in_chans=shape[1]).eval()
        wrapped = TwoHeads(backbone).eval()
        x = torch.randn(shape)
        head1, head2 = wrapped(x)
        assert torch.allclose(head1, backbone(x), atol=1e-6), name
        assert head2.shape == head1.shape and not torch.allclose(head1, head2), name
