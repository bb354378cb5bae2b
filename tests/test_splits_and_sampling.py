"""Invariants of the seeded split and the two-stream sampler."""

import numpy as np
import pytest
import torch

from ssl_toolkit.data.sampling import TwoStreamSampler
from ssl_toolkit.data.splits import make_split
from ssl_toolkit.errors import UserInputError
from ssl_toolkit.testing import tiny_trainer

Y = np.repeat(np.arange(10), [50, 60, 70, 80, 90, 100, 110, 120, 130, 140])


def test_labeled_set_is_class_balanced_and_disjoint_from_validation():
    split = make_split("toy", Y, 10, labels=45, val_size=100, seed=3)
    counts = np.bincount(Y[split.labeled], minlength=10)
    assert counts.sum() == 45 and counts.min() >= 4 and counts.max() <= 5
    assert not set(split.labeled) & set(split.val)
    assert len(split.val) == 100 and len(set(split.val)) == 100


def test_validation_is_stratified_and_independent_of_the_label_count():
    a = make_split("toy", Y, 10, labels=20, val_size=100, seed=1)
    b = make_split("toy", Y, 10, labels=200, val_size=100, seed=1)
    assert np.array_equal(a.val, b.val)
    expected = 100 * np.bincount(Y) / len(Y)
    assert np.all(np.abs(np.bincount(Y[a.val], minlength=10) - expected) < 1)


def test_unlabeled_pool_is_every_non_validation_image_plus_the_extra_ones():
    split = make_split("toy", Y, 10, labels=30, val_size=50, seed=0, num_extra_unlabeled=7)
    train_part = split.unlabeled[split.unlabeled < len(Y)]
    assert set(train_part) == set(range(len(Y))) - set(split.val)
    assert set(split.labeled) <= set(train_part)
    assert list(split.unlabeled[split.unlabeled >= len(Y)]) == list(range(len(Y), len(Y) + 7))


def test_split_is_reproducible_by_seed_and_larger_label_sets_extend_smaller_ones():
    one = make_split("toy", Y, 10, labels=50, val_size=100, seed=7)
    again = make_split("toy", Y, 10, labels=50, val_size=100, seed=7)
    other = make_split("toy", Y, 10, labels=50, val_size=100, seed=8)
    larger = make_split("toy", Y, 10, labels=100, val_size=100, seed=7)
    assert np.array_equal(one.labeled, again.labeled) and not np.array_equal(one.labeled, other.labeled)
    assert set(one.labeled) <= set(larger.labeled)
    assert one.name == "toy.7@50-100"


def test_capped_unlabeled_pool_keeps_every_labeled_image_and_draws_the_rest_by_seed():
    full = make_split("toy", Y, 10, labels=30, val_size=50, seed=0)
    capped = make_split("toy", Y, 10, labels=30, val_size=50, seed=0, unlabeled_pool=200)
    again = make_split("toy", Y, 10, labels=30, val_size=50, seed=0, unlabeled_pool=200)
    other_seed = make_split("toy", Y, 10, labels=30, val_size=50, seed=1, unlabeled_pool=200)
    assert len(capped.unlabeled) == 200 and len(set(capped.unlabeled)) == 200
    assert set(capped.labeled) <= set(capped.unlabeled) <= set(full.unlabeled)
    assert np.array_equal(capped.labeled, full.labeled) and np.array_equal(capped.val, full.val)
    assert np.array_equal(capped.unlabeled, again.unlabeled)
    assert not np.array_equal(np.setdiff1d(capped.unlabeled, capped.labeled),
                              np.setdiff1d(other_seed.unlabeled, other_seed.labeled))
    assert capped.name == "toy.0@30-50-u200"


def test_unlabeled_pool_smaller_than_the_labeled_set_is_a_user_error():
    with pytest.raises(UserInputError, match="--unlabeled-pool 29 is smaller than the 30 labeled .*valid: 30 or more"):
        make_split("toy", Y, 10, labels=30, val_size=50, seed=0, unlabeled_pool=29)


@pytest.mark.parametrize("size", [900, 5000])
def test_unlabeled_pool_cap_at_or_above_the_pool_keeps_the_whole_pool(size):
    full = make_split("toy", Y, 10, labels=30, val_size=50, seed=0)
    capped = make_split("toy", Y, 10, labels=30, val_size=50, seed=0, unlabeled_pool=size)
    assert np.array_equal(capped.unlabeled, full.unlabeled) and capped.name == full.name


@pytest.mark.parametrize(
    "labels, val_size, message",
    [(9, 10, "fewer than the 10 classes"), (1000, 50, "more than the 900"), (10, -1, "--val-size -1")],
)
def test_impossible_splits_are_user_errors(labels, val_size, message):
    with pytest.raises(UserInputError, match=message):
        make_split("toy", Y, 10, labels=labels, val_size=val_size, seed=0)


def test_two_stream_batches_have_fixed_composition_and_cover_the_pool_once_per_epoch():
    labeled, unlabeled = np.arange(7), np.arange(100, 150)
    sampler = TwoStreamSampler(labeled, unlabeled, batch_size=13, labeled_batch_size=3, seed=0)
    assert sampler.steps_per_epoch == 5
    epoch_rows = []
    for step in range(sampler.steps_per_epoch):
        lab, unl = sampler.batch(step)
        assert len(lab) == 3 and len(unl) == 10
        assert set(lab) <= set(labeled) and set(unl) <= set(unlabeled)
        epoch_rows.extend(unl)
    assert sorted(epoch_rows) == list(unlabeled)
    assert sampler.epoch_ends_after(4) and not sampler.epoch_ends_after(3)
    second_epoch = np.concatenate([sampler.batch(s)[1] for s in range(5, 10)])
    assert sorted(second_epoch) == list(unlabeled) and not np.array_equal(second_epoch, epoch_rows)


def test_labeled_stream_visits_every_labeled_image_before_repeating():
    sampler = TwoStreamSampler(np.arange(6), np.arange(40), batch_size=8, labeled_batch_size=4, seed=2)
    stream = np.concatenate([sampler.batch(step)[0] for step in range(3)])
    assert sorted(stream[:6]) == list(range(6)) and sorted(stream[6:12]) == list(range(6))


def test_batches_are_a_pure_function_of_seed_and_step():
    a = TwoStreamSampler(np.arange(10), np.arange(64), batch_size=16, labeled_batch_size=4, seed=5)
    b = TwoStreamSampler(np.arange(10), np.arange(64), batch_size=16, labeled_batch_size=4, seed=5)
    for step in (7, 0, 3, 7):
        assert all(np.array_equal(x, y) for x, y in zip(a.batch(step), b.batch(step), strict=True))


def test_ranks_split_a_global_batch_without_overlap():
    args = (np.arange(10), np.arange(64), 16, 4)
    full = TwoStreamSampler(*args, seed=1).batch(3)
    parts = [TwoStreamSampler(*args, seed=1, rank=r, world_size=2).batch(3) for r in range(2)]
    for stream in range(2):
        assert sorted(np.concatenate([p[stream] for p in parts])) == sorted(full[stream])


def test_bad_batch_composition_is_a_user_error():
    with pytest.raises(UserInputError, match="--labeled-batch-size 8 must be at least 1 and smaller"):
        TwoStreamSampler(np.arange(5), np.arange(50), batch_size=8, labeled_batch_size=8, seed=0)
    with pytest.raises(UserInputError, match="more than the 5 of the unlabeled pool"):
        TwoStreamSampler(np.arange(5), np.arange(5), batch_size=16, labeled_batch_size=4, seed=0)


def test_temporal_ensembling_folds_once_per_pass_over_a_capped_unlabeled_pool(tmp_path):
    trainer = tiny_trainer("temporal_ensembling", tmp_path / "run", steps=20, unlabeled_pool=200)
    pool = set(trainer.data.split.unlabeled.tolist())
    assert len(pool) == 200 and trainer.sampler.steps_per_epoch == 200 // 24
    trainer.algorithm.train()
    drawn = set()
    for step in range(trainer.sampler.steps_per_epoch):
        batch = trainer.make_batch(step)
        drawn |= set(batch.index[8:].tolist())
        assert int(trainer.algorithm.fold_count.sum()) == 0  # no targets before the first pass ends
        trainer.train_step(step)
    assert drawn <= pool and len(drawn) == 8 * 24
    folded = set(torch.nonzero(trainer.algorithm.fold_count).flatten().tolist())
    assert folded == drawn
