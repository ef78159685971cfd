"""One process or many: the device, the process group and the few collectives the trainer uses.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`setup` joins the process
group: NCCL when the run is on CUDA, gloo on the CPU. Without it everything is a no-op, so the
same code trains on one process.

>>> from diffusion_schemes_trainer.training.distributed import setup
>>> ctx = setup("cpu")
>>> ctx.rank, ctx.world_size, ctx.is_main, str(ctx.device)
(0, 1, True, 'cpu')
>>> ctx.mean(2.5), ctx.gather("rank 0's")
(2.5, ["rank 0's"])
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import torch

from ..errors import TrainerError

__all__ = ["Context", "launched_world_size", "setup"]


@dataclasses.dataclass
class Context:
    """This process's place in the run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """Whether there are several processes."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and prints."""
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, work: Callable[[], Any], share: bool = True) -> Any:
        """``work()`` run on rank 0 only, its result on every rank (``share=False``: None on the others).

        A failure is raised on every rank: on rank 0 ``work``'s own error, on the others a
        :class:`TrainerError` quoting it, rather than a wait for a result that never comes.
        """
        if not self.distributed:
            return work()
        result, failure = None, None
        if self.is_main:
            try:
                result = work()
            except Exception as exc:  # noqa: BLE001 - told to the other ranks, then raised here as it was
                failure = exc
        shared, message = self.broadcast((result if share else None, None if failure is None else str(failure)))
        if failure is not None:
            raise failure
        if message is not None:
            raise TrainerError(f"rank 0 failed: {message}")
        return shared if share else result

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return float(t) / self.world_size

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (any picklable object), in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def identical(self, module: torch.nn.Module) -> bool:
        """Whether ``module``'s parameters are bit-for-bit the same on every rank (a DDP sanity check)."""
        if not self.distributed:
            return True
        flat = torch.cat([p.detach().reshape(-1).double() for p in module.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(self.world_size)]
        torch.distributed.all_gather(gathered, flat)
        return all(torch.equal(gathered[0], g) for g in gathered[1:])

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.distributed:
            torch.distributed.barrier()

    def close(self) -> None:
        """Leave the process group if :func:`setup` joined it."""
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _device(name: str, local_rank: int, distributed: bool) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrainerError(f"unknown device {name!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainerError(f"device {name!r} was asked for but CUDA is not available; use device = 'cpu' or 'auto'")
        if distributed and device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def launched_world_size() -> int:
    """The number of processes ``torchrun`` started (its ``WORLD_SIZE``; 1 when not under torchrun).

    >>> launched_world_size() >= 1
    True
    """
    value = os.environ.get("WORLD_SIZE", "1")
    if not value.strip().isdigit():
        raise TrainerError(f"WORLD_SIZE={value!r} in the environment is not a number of processes; unset it or "
                           "start the command with torchrun")
    return int(value)


def setup(device: str = "cpu") -> Context:
    """The context of this process; joins the process group when launched by ``torchrun``."""
    world_size = launched_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(device, local_rank, world_size > 1)
    owns = False
    if world_size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
        owns = True
    if world_size > 1:
        rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    return Context(rank, world_size, local_rank, dev, owns)
