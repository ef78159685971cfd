"""Resource limits as input errors: a batch, a sample count or a data set that cannot fit in memory is
refused before any work, with a message that names the limit.

The limit is what the device has free now (``MemAvailable`` of ``/proc/meminfo`` on Linux, the free
pages elsewhere; ``torch.cuda.mem_get_info`` on a GPU): a request may use at most :data:`SHARE` of
it. What a request needs is estimated from the data's shape and the backbone's
``floats_per_sample`` (about what one sample keeps for the backward pass): a bound meant to catch a
batch of ``100000000000``, not to plan memory to the byte.

>>> from diffusion_schemes_trainer.limits import check_fits
>>> check_fits("a tiny batch", 1024, "cpu", "use a smaller one")
>>> check_fits("a huge batch", 10**18, "cpu", "use a smaller --batch-size")
Traceback (most recent call last):
  ...
diffusion_schemes_trainer.errors.TrainerError: a huge batch needs about 931322574.6 GiB of memory; ... use a smaller --batch-size
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch

from .errors import TrainerError

__all__ = ["SHARE", "available_bytes", "check_fits", "sampling_bytes", "training_bytes"]

#: The share of the free memory one request may take.
SHARE = 0.8
_FLOAT = 4


def available_bytes(device: Any = "cpu") -> int:
    """Bytes free on ``device`` now."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # no way to tell: do not refuse
        return 1 << 62


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_fits(what: str, needed: float, device: Any, fix: str) -> None:
    """Raise a :class:`TrainerError` when ``needed`` bytes exceed :data:`SHARE` of what ``device`` has free."""
    free = available_bytes(device)
    if needed > SHARE * free:
        raise TrainerError(
            f"{what} needs about {_gib(needed)} of memory; the limit is {SHARE:.0%} of the {_gib(free)} free on "
            f"{torch.device(device)} now ({_gib(SHARE * free)}): {fix}"
        )


def sampling_bytes(n: int, shape: Sequence[int], model: Any) -> int:
    """About the memory of sampling ``n`` samples: the solver's states and one forward of the backbone."""
    return n * _FLOAT * (8 * math.prod(shape) + model.floats_per_sample(shape))


def training_bytes(batch: int, shape: Sequence[int], model: Any) -> int:
    """About the memory of one training step of ``batch`` samples (forward and backward)."""
    return batch * _FLOAT * (4 * math.prod(shape) + 2 * model.floats_per_sample(shape))
