"""Data-parallel training across processes launched by ``torchrun``: the process group and the few
collectives the training loop needs (a worker's device and threads: devices.py).

Without torchrun (no WORLD_SIZE in the environment) the world has one process and every helper here is
a no-op, so single-process training runs the same code path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as td

from charrnn.errors import CharRNNError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SOLO = World()  # one process, no torchrun


def from_env() -> World:
    """The world torchrun describes in the environment (a world of one without it)."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)),
                 int(env.get("LOCAL_WORLD_SIZE", 1)))


def start(world: World, device: str | None = None) -> None:
    """Join the process group (Gloo for CPU tensors, NCCL for CUDA ones); nothing without torchrun. ``device`` is
    the one asked for (None: the default), and "cpu" keeps even a machine with GPUs on Gloo."""
    if not world.enabled or td.is_initialized():
        return
    if torch.cuda.is_available() and device != "cpu":
        if world.local_world_size > torch.cuda.device_count():  # every worker says so, none waits for the others
            raise CharRNNError(f"torchrun started {world.local_world_size} workers on this machine, which has "
                               f"{torch.cuda.device_count()} GPU(s): start one worker per GPU (--nproc-per-node), or "
                               "train on the CPU with --device cpu")
        torch.cuda.set_device(world.local_rank)
        td.init_process_group("cpu:gloo,cuda:nccl")
    else:
        td.init_process_group("gloo")


def stop(world: World) -> None:
    if world.enabled and td.is_initialized():
        td.destroy_process_group()


def all_max(world: World, values: list[float], device: torch.device) -> list[float]:
    """Element-wise maximum over all workers (so that they all take the same decisions)."""
    if not world.enabled:
        return values
    buf = torch.tensor(values, dtype=torch.float64, device=device)
    td.all_reduce(buf, op=td.ReduceOp.MAX)
    return buf.tolist()


def all_sum_(world: World, tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all workers, in place."""
    if world.enabled:
        td.all_reduce(tensor)
    return tensor


def barrier(world: World) -> None:
    if world.enabled:
        td.barrier()


def gather(world: World, obj: T) -> list[T] | None:
    """Every worker's ``obj`` on rank 0 (None elsewhere); a list of one without torchrun."""
    if not world.enabled:
        return [obj]
    out: list[Any] | None = [None] * world.world_size if world.is_main else None
    td.gather_object(obj, out, dst=0)
    return out


def broadcast(world: World, obj: T) -> T:
    """Rank 0's ``obj`` on every worker."""
    if not world.enabled:
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def rank0_first(world: World, fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0, then on the others (e.g. so that one worker fills a cache the others reuse).
    A user error on rank 0 is raised on every worker instead of leaving them waiting."""
    if not world.enabled:
        return fn()
    error: tuple[str, int] | None = None
    result = None
    if world.is_main:
        try:
            result = fn()
        except CharRNNError as e:
            error = (str(e), e.exit_code)
    error = broadcast(world, error)
    if error is not None:
        raise CharRNNError(*error)
    return result if world.is_main else fn()
