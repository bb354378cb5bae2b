"""Two-stream batches: a labeled stream and an unlabeled stream, each an endless run of permutations.

Which images make up step ``s`` is a pure function of (seed, s), so a resumed run draws exactly
the batches an uninterrupted one would, with no sampler state to save.
"""

from __future__ import annotations

import numpy as np

from ssl_toolkit.errors import UserInputError


class _PermutationStream:
    """Position ``p`` of an endless stream: ``perm_e[p mod n]`` with ``e = p // n`` and a seeded perm per e."""

    def __init__(self, items: np.ndarray, seed: int, stream_id: int) -> None:
        self.items = np.asarray(items, dtype=np.int64)
        self.seed = seed
        self.stream_id = stream_id
        self._cache: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            rng = np.random.default_rng([self.seed, self.stream_id, epoch])
            self._cache[epoch] = self.items[rng.permutation(len(self.items))]
        return self._cache[epoch]

    def take(self, start: int, count: int) -> np.ndarray:
        n = len(self.items)
        positions = np.arange(start, start + count)
        epochs = positions // n
        out = np.empty(count, dtype=np.int64)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            out[mask] = self.permutation(int(epoch))[positions[mask] % n]
        return out


class TwoStreamSampler:
    """Batches of ``labeled_batch_size`` labeled plus ``batch_size - labeled_batch_size`` unlabeled rows.

    An epoch is one pass over the unlabeled stream (dropping the last incomplete batch); the
    labeled stream cycles independently. Batch sizes are global: under torchrun each rank takes
    every ``world_size``-th slot of both streams' parts of the global batch, so the ranks' shares
    are equal and their union is the single-process batch.

    Example:
        >>> sampler = TwoStreamSampler(np.arange(10), np.arange(100), 32, 8, seed=0)
        >>> labeled, unlabeled = sampler.batch(step=0)
    """

    def __init__(
        self,
        labeled: np.ndarray,
        unlabeled: np.ndarray,
        batch_size: int,
        labeled_batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 < labeled_batch_size < batch_size:
            raise UserInputError(
                f"--labeled-batch-size {labeled_batch_size} must be at least 1 and smaller than "
                f"--batch-size {batch_size} (the rest of the batch is unlabeled)"
            )
        unlabeled_batch_size = batch_size - labeled_batch_size
        if not 0 <= rank < world_size or labeled_batch_size % world_size or unlabeled_batch_size % world_size:
            # The trainer refuses such batches with the flags' names; this guards direct use.
            raise ValueError(f"rank {rank} of {world_size}: both streams' batch sizes ({labeled_batch_size}, "
                             f"{unlabeled_batch_size}) must be divisible by the world size")
        if len(unlabeled) < unlabeled_batch_size:
            raise UserInputError(
                f"--batch-size {batch_size} asks for {unlabeled_batch_size} unlabeled images per batch, more "
                f"than the {len(unlabeled)} of the unlabeled pool; valid: --batch-size up to "
                f"{len(unlabeled) + labeled_batch_size}"
            )
        self.labeled_batch_size = labeled_batch_size
        self.unlabeled_batch_size = unlabeled_batch_size
        self.rank = rank
        self.world_size = world_size
        self.labeled_stream = _PermutationStream(labeled, seed, stream_id=0)
        self.unlabeled_stream = _PermutationStream(unlabeled, seed, stream_id=1)
        self.steps_per_epoch = len(unlabeled) // unlabeled_batch_size

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of the labeled and unlabeled parts of the batch for ``step`` (0-based)."""
        labeled = self.labeled_stream.take(step * self.labeled_batch_size, self.labeled_batch_size)
        epoch, within = divmod(step, self.steps_per_epoch)
        start = epoch * len(self.unlabeled_stream.items) + within * self.unlabeled_batch_size
        unlabeled = self.unlabeled_stream.take(start, self.unlabeled_batch_size)
        if self.world_size > 1:
            labeled = labeled[self.rank :: self.world_size]
            unlabeled = unlabeled[self.rank :: self.world_size]
        return labeled, unlabeled

    def epoch_ends_after(self, step: int) -> bool:
        """True when ``step`` (0-based) is the last batch of an unlabeled epoch."""
        return (step + 1) % self.steps_per_epoch == 0

    def epochs_done(self, steps_done: int) -> int:
        return steps_done // self.steps_per_epoch
