"""Pseudo-Label, FixMatch and VAT compute the published formulas, re-derived here by hand."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from ssl_toolkit import ConsistencyAlgorithm, ConsistencyWeightConfig, UserInputError, register_algorithm
from ssl_toolkit.algorithm import Batch
from ssl_toolkit.losses import NO_LABEL
from ssl_toolkit.testing import tiny_trainer


def test_pseudo_label_targets_are_the_confident_argmax_of_unlabeled_rows_and_the_loss_is_their_summed_ce(tmp_path):
    trainer = tiny_trainer("pseudo_label", tmp_path / "run")
    algorithm, batch = trainer.algorithm, trainer.make_batch(0)
    output = algorithm.student(batch.view("student"))
    probs = F.softmax(output.detach(), dim=1)
    algorithm.config.threshold = threshold = float(probs.max(dim=1).values[batch.unlabeled].median())
    targets = algorithm.teacher_targets(batch, output)
    keep = batch.unlabeled_mask & (probs.max(dim=1).values >= threshold)
    assert 0 < int(keep.sum()) < int(batch.unlabeled_mask.sum()), "the test needs kept and dropped unlabeled rows"
    assert torch.equal(targets, torch.where(keep, probs.argmax(dim=1), NO_LABEL))
    assert not targets.requires_grad
    expected = F.cross_entropy(output[keep], probs.argmax(dim=1)[keep], reduction="sum") / len(output)
    assert torch.allclose(algorithm.consistency_loss(output, targets, batch), expected)


def test_pseudo_label_threshold_zero_labels_every_unlabeled_row_and_no_labeled_one(tmp_path):
    trainer = tiny_trainer("pseudo_label", tmp_path / "run", hparams={"threshold": 0.0})
    batch = trainer.make_batch(0)
    targets = trainer.algorithm.teacher_targets(batch, trainer.algorithm.student(batch.view("student")))
    assert torch.equal(targets != NO_LABEL, batch.unlabeled_mask)


def test_fixmatch_trains_the_strong_view_on_weak_view_labels_averaged_over_all_unlabeled_rows(tmp_path):
    trainer = tiny_trainer("fixmatch", tmp_path / "run")
    algorithm, batch = trainer.algorithm, trainer.make_batch(0)
    weak = batch.view("student").clone().requires_grad_(True)
    strong = batch.view("strong").clone().requires_grad_(True)
    batch = Batch({"student": weak, "strong": strong}, batch.y, batch.index, batch.generator)
    algorithm.eval()  # no dropout: the strong pass below is recomputed by hand
    output = algorithm.student(weak)
    probs = F.softmax(output.detach()[batch.unlabeled], dim=1)
    algorithm.config.threshold = threshold = float(probs.max(dim=1).values.median())
    labels, keep = algorithm.teacher_targets(batch, output)
    assert torch.equal(labels, probs.argmax(dim=1)) and torch.equal(keep, probs.max(dim=1).values >= threshold)
    assert 0 < int(keep.sum()) < len(keep)
    loss = algorithm.consistency_loss(output, (labels, keep), batch)
    strong_logits = algorithm.student(strong[batch.unlabeled])
    per_image = F.cross_entropy(strong_logits, labels, reduction="none")
    assert torch.allclose(loss, (per_image * keep).sum() / len(keep))
    loss.backward()
    assert weak.grad is None or weak.grad.abs().sum() == 0, "the weak-view labels carry no gradient"
    assert strong.grad is not None and strong.grad[batch.unlabeled].abs().sum() > 0


def test_fixmatch_weight_is_lambda_u_times_the_labeled_share_from_the_first_step(tmp_path):
    trainer = tiny_trainer("fixmatch", tmp_path / "run", steps=100, eval_every=100)
    share = trainer.config.labeled_batch_size / trainer.config.batch_size
    assert [trainer.algorithm.consistency_weight(s) for s in (0, 50, 99)] == [share] * 3


def vat_trainer(tmp_path, **hparams):
    trainer = tiny_trainer("vat", tmp_path / "run", hparams={"epsilon": 2.0, **hparams})
    return trainer, trainer.algorithm, trainer.make_batch(0)


def test_vat_perturbation_has_norm_epsilon_per_image_and_comes_from_the_runs_generator(tmp_path):
    trainer, algorithm, batch = vat_trainer(tmp_path)
    x = batch.view("student")
    clean = algorithm.student(x).detach()
    state = batch.generator.get_state()
    torch.manual_seed(1)
    r = algorithm.adversarial_perturbation(x, clean, batch.generator)
    assert torch.allclose(r.flatten(1).norm(dim=1), torch.full((len(x),), 2.0), rtol=1e-4)
    algorithm.eval()  # without dropout the direction is a function of the generator's draw alone
    batch.generator.set_state(state)
    torch.manual_seed(2)
    first = algorithm.adversarial_perturbation(x, algorithm.student(x).detach(), batch.generator)
    batch.generator.set_state(state)
    torch.manual_seed(3)
    second = algorithm.adversarial_perturbation(x, algorithm.student(x).detach(), batch.generator)
    assert torch.equal(first, second)


def test_vat_direction_raises_the_divergence_more_than_random_directions_of_the_same_norm(tmp_path):
    # With a finite-difference step large enough for float32, one power iteration finds the sensitive direction.
    trainer, algorithm, batch = vat_trainer(tmp_path, xi=0.1)
    for step in range(30):  # a briefly trained student, so its predictions respond to the input
        trainer.train_step(step)
    algorithm.eval()
    x = batch.view("student")
    clean = algorithm.student(x).detach()

    def divergence(r):
        return F.kl_div(F.log_softmax(algorithm.student(x + r), 1), F.softmax(clean, 1), reduction="none").sum(1)

    adversarial = divergence(algorithm.adversarial_perturbation(x, clean, batch.generator))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    random = divergence(2.0 * noise / noise.flatten(1).norm(dim=1)[:, None, None, None])
    assert float((adversarial > random).float().mean()) > 0.8


def test_vat_loss_is_the_kl_from_clean_to_perturbed_predictions_and_leaves_batchnorm_statistics(tmp_path):
    trainer, algorithm, batch = vat_trainer(tmp_path)
    x = batch.view("student")
    output = algorithm.student(x)
    buffers = {name: b.clone() for name, b in algorithm.student.named_buffers()}
    state = batch.generator.get_state()
    algorithm.eval()  # deterministic passes, so the hand computation sees the same network
    loss = algorithm.consistency_loss(output, output.detach(), batch)
    assert all(torch.equal(b, buffers[name]) for name, b in algorithm.student.named_buffers())
    batch.generator.set_state(state)
    r = algorithm.adversarial_perturbation(x, output.detach(), batch.generator)
    p = F.softmax(output.detach(), dim=1)
    expected = (p * (torch.log(p) - F.log_softmax(algorithm.student(x + r), dim=1))).sum() / len(x)
    assert torch.allclose(loss, expected, atol=1e-6)
    assert loss.requires_grad and not output.detach().requires_grad


def test_vat_perturbed_passes_in_train_mode_keep_batchnorm_running_statistics(tmp_path):
    trainer, algorithm, batch = vat_trainer(tmp_path)
    algorithm.train()
    output = algorithm.student(batch.view("student"))
    buffers = {name: b.clone() for name, b in algorithm.student.named_buffers()}
    algorithm.consistency_loss(output, output.detach(), batch).backward()
    assert all(torch.equal(b, buffers[name]) for name, b in algorithm.student.named_buffers())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in algorithm.student.parameters())


def test_vat_entropy_minimisation_is_off_by_default_and_scaled_by_the_labeled_share(tmp_path):
    _, plain, _ = vat_trainer(tmp_path / "plain")
    trainer, entmin, batch = vat_trainer(tmp_path / "entmin", entmin_weight=1.0)
    output = entmin.student(batch.view("student"))
    assert plain.auxiliary_loss(output) is None
    p = F.softmax(output, dim=1)
    entropy = -(p * torch.log(p)).sum(dim=1).mean()
    share = trainer.config.labeled_batch_size / trainer.config.batch_size
    assert torch.allclose(entmin.auxiliary_loss(output), share * entropy)


def test_a_consistency_algorithm_without_a_distance_must_define_its_loss():
    @dataclass
    class OnlyWeight(ConsistencyWeightConfig):
        pass

    with pytest.raises(UserInputError, match="must define consistency_loss"):
        @register_algorithm("no_loss_test_algorithm")
        class NoLoss(ConsistencyAlgorithm):
            Config = OnlyWeight
