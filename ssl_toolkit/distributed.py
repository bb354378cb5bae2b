"""One run on many processes under ``torchrun``: the process group, each rank's device, the few collectives.

``torchrun --nproc_per_node N -m ssl_toolkit run ...`` starts N copies of the run; :func:`join` reads
torchrun's environment (``env://``) and joins them into one process group (nccl on GPUs, gloo on
CPUs), or reuses a group its caller already initialized. A single process (no torchrun, or torchrun
with one process) gets :data:`SINGLE_PROCESS`, whose collectives return their input untouched, so an
ordinary run does exactly what it did before distributed training existed.

The trainer averages gradients itself after the backward pass (:meth:`Ranks.average`) instead of
wrapping the student in DistributedDataParallel: see docs/scaling.md, "Why no DDP wrapper".
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ssl_toolkit.errors import UserInputError

# Gradients travel in buckets of about this size (DistributedDataParallel's default, 25 MiB): one
# collective per bucket, without a second copy of the whole model's gradients at once.
BUCKET_BYTES = 25 * 2**20


def launched_rank() -> int:
    """This process's rank as torchrun's environment says (0 outside torchrun), readable before any group exists."""
    return int(os.environ.get("RANK", "0"))


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own random streams (augmentation, dropout).

    Rank 0 keeps the run's seed, so a one-process run draws what it always drew; the other ranks
    get independent streams derived from (seed, rank).
    """
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0])


def digest(*parts: Any) -> int:
    """A 63-bit fingerprint of ``parts`` (JSON-like values and numpy arrays), for comparing ranks."""
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part.tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
        sha.update(b"\0")
    return int.from_bytes(sha.digest()[:8], "little") >> 1


@dataclass(frozen=True)
class Ranks:
    """The processes that train one run together; one process is :data:`SINGLE_PROCESS`.

    ``rank`` 0 is the main process: it alone evaluates, writes the run folder and shows progress.
    ``local_rank`` picks this process's GPU on its node. Every collective is the identity in one
    process, and in several it must be called by every rank at the same point of the run.

    Example:
        >>> ranks = join("auto")          # under torchrun: this process's place in the group
        >>> ranks.all_gather(torch.tensor([ranks.rank]))
        tensor([0, 1])
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def leave(self) -> None:
        """Destroy the process group if :func:`join` created it (a caller's own group stays)."""
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    # -- collectives ----------------------------------------------------------------------------
    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """``tensor`` summed over ranks, in place (every rank gets the same bits)."""
        if self.is_distributed:
            torch.distributed.all_reduce(tensor)
        return tensor

    def all_gather(self, tensor: Tensor) -> Tensor:
        """Every rank's ``tensor`` concatenated along dim 0 in rank order; the tensor itself in one process.

        The ranks' tensors may differ in length along dim 0 (not in their other dimensions or dtype).
        """
        if not self.is_distributed:
            return tensor
        length = torch.tensor([tensor.shape[0]], device=tensor.device)
        lengths = [torch.empty_like(length) for _ in range(self.world_size)]
        torch.distributed.all_gather(lengths, length)
        sizes = [int(n) for n in torch.cat(lengths).tolist()]
        longest = max(sizes)
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, padded.contiguous())
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])

    def all_gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's picklable ``obj``, in rank order (small objects only: states, messages)."""
        if not self.is_distributed:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, obj)
        return gathered

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's picklable ``obj`` on every rank."""
        if not self.is_distributed:
            return obj
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers into every rank's ``module``, in place."""
        if not self.is_distributed:
            return
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                torch.distributed.broadcast(tensor.data, src=0)

    def average(self, tensors: Sequence[Tensor]) -> None:
        """Replace each tensor by its mean over ranks, in place, in buckets of about 25 MiB per collective.

        Exact up to the order of the floating-point sums, and the same bits on every rank afterwards.
        """
        if not self.is_distributed or not tensors:
            return
        for bucket in _buckets(tensors):
            flat = torch.cat([t.reshape(-1) for t in bucket])
            torch.distributed.all_reduce(flat)
            flat.div_(self.world_size)
            offset = 0
            for t in bucket:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()

    def raise_any(self, error: UserInputError | None) -> None:
        """Raise on every rank if any rank met bad input; the first failing rank's message wins.

        Called by every rank at the same point, so a check that fails on one rank only (its GPU is
        missing) stops all of them with one message instead of leaving the others waiting.
        """
        if not self.is_distributed:
            if error is not None:
                raise error
            return
        messages = self.all_gather_objects(None if error is None else str(error))
        for rank, message in enumerate(messages):
            if message is not None:
                raise UserInputError(message if all(m == message for m in messages) else f"rank {rank}: {message}")


SINGLE_PROCESS = Ranks()


def _buckets(tensors: Sequence[Tensor]) -> list[list[Tensor]]:
    """Consecutive runs of tensors of one dtype and device, each up to about :data:`BUCKET_BYTES`."""
    buckets: list[list[Tensor]] = []
    size = 0
    for t in tensors:
        if not buckets or size >= BUCKET_BYTES or (t.dtype, t.device) != (buckets[-1][0].dtype, buckets[-1][0].device):
            buckets.append([])
            size = 0
        buckets[-1].append(t)
        size += t.numel() * t.element_size()
    return buckets


def wants_cuda(device: str) -> bool:
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def join(device: str) -> Ranks:
    """This process's place among the run's processes, joining torchrun's group when there is one.

    A group the caller already initialized (a test that spawned its processes) is reused as it is.
    Under torchrun with more than one process, the group is created from its environment
    (``env://``): nccl when the run trains on GPUs (``device`` ``cuda``, or ``auto`` with a GPU
    visible), each rank on GPU ``LOCAL_RANK``; gloo on CPUs. Otherwise: :data:`SINGLE_PROCESS`.
    """
    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized():
        rank = distributed.get_rank()
        return Ranks(rank, distributed.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE_PROCESS
    if not distributed.is_available():
        raise UserInputError("torchrun started this run on several processes, but this torch build has no "
                             "torch.distributed; run it as one process")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if wants_cuda(device):
        visible = torch.cuda.device_count()
        if local_rank >= visible:
            raise UserInputError(f"torchrun process with LOCAL_RANK {local_rank} has no GPU of its own: this node "
                                 f"shows {visible}; valid: --nproc_per_node up to {visible}, or --device cpu")
        torch.cuda.set_device(local_rank)
        distributed.init_process_group("nccl", init_method="env://", device_id=torch.device("cuda", local_rank))
    else:
        distributed.init_process_group("gloo", init_method="env://")
    return Ranks(distributed.get_rank(), distributed.get_world_size(), local_rank, owns_group=True)
