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
    """This process's place in the job: rank ``rank`` of ``world``; rank 0 is the writer.

    Attributes:
        rank: this process's global rank.
        world: the number of processes (1 without torchrun).
        local_rank: its rank on this machine, which picks its GPU.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this is rank 0, the one process that writes outputs."""
        return self.rank == 0


def resolve_device(requested: str | None) -> torch.device:
    """The torch device to train on: the request, else CUDA when present, else the CPU.

    Args:
        requested: ``cpu``, ``cuda`` or ``cuda:N`` (None: choose).

    Returns:
        The device; an unknown, unavailable or unsupported one is a
        :class:`~hierlab.errors.ConfigError`.
    """
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
    """Join the torchrun process group when ``WORLD_SIZE`` > 1.

    Args:
        device_type: ``cuda`` (the NCCL backend) or ``cpu`` (gloo).

    Returns:
        ``(dist, created)``: this process's place, and whether this call created the
        process group (so the caller destroys it at the end).
    """
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
    """Wait for every rank (no-op on one process).

    Args:
        dist: this process's place in the job.
    """
    if dist.world > 1:
        torch.distributed.barrier()


def all_reduce(tensor: torch.Tensor, dist: Dist) -> torch.Tensor:
    """Sum a tensor over ranks in place (identity on one process).

    Args:
        tensor: the tensor, changed in place.
        dist: this process's place in the job.

    Returns:
        ``tensor``, for chaining.
    """
    if dist.world > 1:
        torch.distributed.all_reduce(tensor)
    return tensor


def accumulators(loss_sum: torch.Tensor, loss_n: int, tokens_since: int, dist: Dist) -> dict:
    """The loss accumulators a checkpoint keeps.

    Every rank's own partial sum is gathered, so that a run resumed between log steps sums
    the same numbers in the same order (bitwise).

    Args:
        loss_sum: this rank's loss sum since the last log step (a scalar tensor).
        loss_n: the micro-batches summed.
        tokens_since: the tokens trained on since the last log step.
        dist: this process's place in the job.

    Returns:
        ``loss_sum`` (rank 0's), ``loss_sum_ranks`` (every rank's), ``loss_n`` and
        ``tokens_since``, JSON-ready.
    """
    ranks = [float(loss_sum)]
    if dist.world > 1:
        parts = [torch.zeros_like(loss_sum) for _ in range(dist.world)]
        torch.distributed.all_gather(parts, loss_sum)
        ranks = [float(p) for p in parts]
    return {"loss_sum": ranks[0], "loss_sum_ranks": ranks, "loss_n": loss_n,
            "tokens_since": tokens_since}


def rank_share(saved_accumulators: dict, dist: Dist) -> float:
    """This rank's partial loss sum, to resume accumulating where the checkpoint stopped.

    Args:
        saved_accumulators: what :func:`accumulators` returned when the checkpoint was
            saved.
        dist: this process's place in the job.

    Returns:
        This rank's saved sum; for older checkpoints and a changed world size, rank 0 takes
        the whole saved sum and the others 0.
    """
    ranks = saved_accumulators.get("loss_sum_ranks")
    if ranks is not None and len(ranks) == dist.world:
        return float(ranks[dist.rank])
    return float(saved_accumulators["loss_sum"]) if dist.main else 0.0
