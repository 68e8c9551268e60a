"""Training on several processes (torch DDP): the plumbing, so that ``loop.fit`` stays small.

``torchrun --nproc_per_node K -m deepsmlm.cli train EXP --out DIR`` starts K processes with
the environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous
``MASTER_ADDR``/``MASTER_PORT``); ``session()`` reads them and opens the process group (gloo on
the CPU, nccl on CUDA with device ``cuda:LOCAL_RANK``). Without them — a plain
``deepsmlm train`` — it yields ``Context()``: one process, no process group, and every helper
below is the identity, so the single-process path does exactly what it did before.

Each rank simulates its own training data (its generator seeded ``rank_seed(seed, rank)``);
gradients are averaged over the ranks by DistributedDataParallel, so the effective batch is
K × ``batch_size``. Rank 0 alone writes files and prints.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from deepsmlm.errors import UserError

RANK_SEED_STRIDE = 1000  # rank r's training generator: seed + 1000·r (rank 0: seed itself)


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s training generator; the single process is rank 0."""
    return seed + RANK_SEED_STRIDE * rank


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size`` (one process: 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        """Where the tensors of a collective live (nccl: the rank's GPU)."""
        return torch.device(self.device)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (decisions that must agree: the time budget)."""
        if not self.enabled:
            return flag
        import torch.distributed as dist

        t = torch.tensor([int(flag)], dtype=torch.int64, device=self.comm_device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def sum_floats(self, *values: float) -> list[float]:
        """``values`` summed over the ranks (float64)."""
        if not self.enabled:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t)
        return [float(v) for v in t.cpu()]

    def gather_states(self, state: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``state`` (a uint8 tensor of the same length on every rank, e.g. a
        generator state), in rank order, on every rank."""
        if not self.enabled:
            return [state]
        import torch.distributed as dist

        t = state.to(self.comm_device)
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(out, t)
        return [o.cpu() for o in out]

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank, so that all ranks
        validate the same model."""
        if not self.enabled:
            return
        import torch.distributed as dist

        for b in model.buffers():
            dist.broadcast(b.data, src=0)

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel (gradients averaged over the ranks); the
        model itself with one process."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.device.startswith("cuda") else None
        return DistributedDataParallel(model, device_ids=ids)


SINGLE = Context()  # one process on the CPU: the default of every function that takes a context


def from_env(device: str = "cpu") -> Context:
    """The context the environment describes (no process group is opened here)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Context(device=device)
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.startswith("cuda"):
        device = f"cuda:{local}"  # one GPU per rank; --device cuda means "this rank's GPU"
    return Context(rank, world, local, device)


@contextlib.contextmanager
def session(device: str = "cpu") -> Iterator[Context]:
    """The context of this process, with the process group open while inside when
    torchrun started several processes (closed again on the way out)."""
    ctx = from_env(device)
    if not ctx.enabled:
        yield ctx
        return
    import torch.distributed as dist

    if not dist.is_available():
        raise UserError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if ctx.device.startswith("cuda"):
        if not torch.cuda.is_available() or torch.cuda.device_count() <= ctx.local_rank:
            raise UserError(f"rank {ctx.rank}: no GPU {ctx.device} for LOCAL_RANK "
                            f"{ctx.local_rank}")
        torch.cuda.set_device(ctx.local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    opened = not dist.is_initialized()
    if opened:
        dist.init_process_group(backend)
    try:
        yield ctx
    finally:
        if opened and dist.is_initialized():
            dist.destroy_process_group()


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch, or a plain single process (what prints and writes)."""
    return int(os.environ.get("RANK", "0") or 0) == 0
