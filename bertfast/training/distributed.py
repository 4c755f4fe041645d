"""Data parallel training across processes launched by ``torchrun``: the process group, each rank's share of a
global batch, per-example seeds and the sums every rank contributes to.

``torchrun --nproc_per_node N -m bertfast pretrain ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT`` set; ``Distributed.from_environment`` joins the group (gloo on
the CPU, NCCL on CUDA, one GPU per local rank). Without those variables the run is one process and nothing here
talks to anyone.

What a step sees never depends on the number of ranks: the data stream cuts *global* batches (per-rank batch x
ranks x gradient accumulation), example i of a global batch is masked with a generator seeded by
``example_seed(seed, epoch, i)``, and rank r's micro-batch m is rows ``[(m * ranks + r) * b, ... + b)``. Losses are
sums divided by the global counts (labelled tokens, pairs), so the gradients DDP averages are those of one
process running the whole global batch.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
TIMEOUT = datetime.timedelta(minutes=30)  # how long a collective waits for a rank that stopped answering


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: its rank among ``world_size`` processes and its local rank on the machine."""

    rank: int = 0  # this process's rank, 0 .. world_size - 1; rank 0 alone writes checkpoints and logs
    world_size: int = 1  # number of processes training together (1: no process group)
    local_rank: int = 0  # rank on this machine: the CUDA device it uses

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: torch.device) -> "Distributed":
        """Join torchrun's process group when its variables are set (once per process), else one process.

        The backend follows the device: NCCL for CUDA, gloo for the CPU.
        """
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise ValueError(f"WORLD_SIZE={world_size} is set but {', '.join(missing)} is not: launch distributed "
                             f"runs with torchrun (torchrun --nproc_per_node N -m bertfast ...)")
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend, timeout=TIMEOUT)
        if dist.get_world_size() != world_size:
            raise ValueError(f"the process group has {dist.get_world_size()} ranks but WORLD_SIZE is {world_size}")
        return cls(rank, world_size, local_rank)

    def device(self, device: torch.device) -> torch.device:
        """The device of this rank: ``cuda:LOCAL_RANK`` for CUDA in a multi-process run, ``device`` otherwise."""
        if device.type == "cuda" and self.world_size > 1:
            return torch.device("cuda", self.local_rank)
        return device

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks, in place (itself with one process)."""
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather_to_all(self, value: T) -> list[T]:
        """Every rank's ``value`` (a picklable object), in rank order, on every rank."""
        if self.world_size == 1:
            return [value]
        values: list = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def micro_batches(self, global_batch: Sequence[T], grad_accum: int) -> list[list[tuple[int, T]]]:
        """This rank's ``grad_accum`` micro-batches of ``global_batch``, each a list of (index in the global batch,
        example): micro-batch m holds rows [(m * world_size + rank) * b, ... + b), b = len // (world_size * accum)."""
        parts = self.world_size * grad_accum
        if len(global_batch) % parts:
            raise ValueError(f"a global batch of {len(global_batch)} examples does not split into {parts} equal "
                             f"parts ({self.world_size} ranks x {grad_accum} accumulation steps)")
        size = len(global_batch) // parts
        starts = [(m * self.world_size + self.rank) * size for m in range(grad_accum)]
        return [[(i, global_batch[i]) for i in range(start, start + size)] for start in starts]


def example_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one example's randomness (its masking): a function of the run's seed, the epoch and the example's
    index in the epoch's stream, never of the rank or the number of ranks."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch, or a process launched alone: the one that prints and writes."""
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """Leaves the process group a command joined (``Distributed.from_environment``) when the command ends."""
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
