"""Distributed setup for ``torchrun`` DDP: who am I, and the two collectives the loop uses.

Without ``WORLD_SIZE > 1`` everything here is a no-op, so the single-process loop reads the
same as the distributed one. Each rank trains a strided slice of the same global batch
(:func:`hierlab.train.data.batch_positions`) and rank 0 writes every output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["Dist", "accumulators", "all_reduce", "barrier", "dist_setup", "rank_share",
           "resolve_device"]


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank ``rank`` of ``world``; rank 0 is the writer."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(requested: str | None) -> torch.device:
    """The torch device to train on: the request, else CUDA when present, else the CPU."""
    from hierlab.errors import ConfigError

    name = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"training.device: unknown device {name!r} (cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"training.device: {name!r} requested but no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"training.device: {name!r} is not supported (cpu, cuda, cuda:N)")
    return device


def dist_setup(device_type: str) -> tuple[Dist, bool]:
    """Join the torchrun process group when WORLD_SIZE > 1; returns (dist, we_created_it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), False
    import torch.distributed as tdist

    created = False
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        created = True
    local = int(os.environ.get("LOCAL_RANK", 0))
    return Dist(tdist.get_rank(), tdist.get_world_size(), local), created


def barrier(dist: Dist) -> None:
    if dist.world > 1:
        torch.distributed.barrier()


def all_reduce(t: torch.Tensor, dist: Dist) -> torch.Tensor:
    """Sum ``t`` over ranks in place (identity on one process)."""
    if dist.world > 1:
        torch.distributed.all_reduce(t)
    return t


def accumulators(loss_sum: torch.Tensor, loss_n: int, tokens_since: int, dist: Dist) -> dict:
    """The loss accumulators a checkpoint keeps: every rank's own partial sum (gathered), so
    a run resumed between log steps sums the same numbers in the same order (bitwise)."""
    ranks = [float(loss_sum)]
    if dist.world > 1:
        parts = [torch.zeros_like(loss_sum) for _ in range(dist.world)]
        torch.distributed.all_gather(parts, loss_sum)
        ranks = [float(p) for p in parts]
    return {"loss_sum": ranks[0], "loss_sum_ranks": ranks, "loss_n": loss_n,
            "tokens_since": tokens_since}


def rank_share(acc: dict, dist: Dist) -> float:
    """This rank's partial loss sum from saved accumulators (older checkpoints and a changed
    world size: rank 0 takes the saved sum)."""
    ranks = acc.get("loss_sum_ranks")
    if ranks is not None and len(ranks) == dist.world:
        return float(ranks[dist.rank])
    return float(acc["loss_sum"]) if dist.main else 0.0
