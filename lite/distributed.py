"""Training on several processes with PyTorch's own engine: torchrun + DistributedDataParallel.

    torchrun --nproc_per_node N [--nnodes M --node_rank K --master_addr A --master_port P] -m lite train RUN
    lite train RUN --nproc N          (the same on this machine: runs torchrun --standalone for you)

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them training is one process.
Backend: gloo on CPU, nccl on CUDA. The batches of one optimizer step are the config's
`train.update_freq` token batches (the effective batch); with N processes each takes every N-th of
them (its shard) and accumulates over update_freq / N, so the effective batch - and the training -
does not depend on N. Rank 0 alone writes checkpoints, logs and progress.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lite.errors import DistributedError, UsageError

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: `lite` imports DistributedError for every command, and
# `lite translate --model` must run where torch does not exist


@dataclass(frozen=True)
class World:
    device: torch.device
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    import torch

    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                "--device cuda: no CUDA device is available to this process (torch.cuda.is_available() is False)"
            )
        return torch.device("cuda", local_rank)
    raise UsageError(f"--device {name!r}: expected cpu or cuda")


def init(device: str = "cpu", timeout_s: float = 600) -> World:
    """Join the process group torchrun described in the environment (or stay a single process)."""
    import torch
    import torch.distributed as dist

    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if size == 1:
        return World(dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        # the timeout bounds every collective: a process that died or hangs ends the job instead of hanging it
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return World(dev, rank, size, local_rank)


def shard(group: list, world: World) -> list[tuple[object, float]]:
    """This rank's share of one step's batches as (batch, weight): every size-th batch from its rank.
    A rank left without a batch (a short last group of an epoch) gets the first batch at weight 0, so
    every rank runs forward/backward and the gradient all-reduce still meets."""
    mine = [(b, 1.0) for b in group[world.rank :: world.size]]
    per_rank = -(-len(group) // world.size)
    return mine + [(group[0], 0.0)] * (per_rank - len(mine))


def broadcast_int(value: int, world: World) -> int:
    """Rank 0's value on every rank (decisions only rank 0 can make: early stopping, the wall clock)."""
    if not world.distributed:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.long, device=world.device)
    dist.broadcast(t, 0)
    return int(t.item())


def finish(world: World) -> None:
    import torch.distributed as dist

    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc: int, argv: list[str]) -> int:
    """`lite train ... --nproc N` on this machine: torchrun --standalone with N processes of `lite ARGV`."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "lite",
        *argv,
    ]
    done = subprocess.run(cmd)
    if done.returncode != 0:
        raise DistributedError(
            f"torchrun: a training process failed (exit {done.returncode}; its error is above); "
            f"the last checkpoint is kept: rerun with --resume (any --nproc)"
        )
    return 0
