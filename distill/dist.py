"""Multi-process training under ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPU).

Without torchrun's environment (RANK and WORLD_SIZE unset) everything here is a no-op, so the
same code runs single-process. Under torchrun, even with one process, the process group and DDP
are real (so a one-GPU machine still exercises the nccl path).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun: a process group exists, whatever its size

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.launched


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join torchrun's process group (once); on CUDA each rank takes the GPU of its local rank."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistContext(), device
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if rank == 0:
            print(f"distributed: {world} process(es), backend {dist.get_backend()}", flush=True)
    return DistContext(rank, world, local_rank, launched=True), device


def all_reduce_sum(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Sum a few scalars over all ranks (identity when single-process)."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
