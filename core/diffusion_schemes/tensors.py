"""Tensor helpers every scheme shares: a per-sample value broadcast against a batch of latents
(``append_dims``), the dtype coefficients are computed in (``compute_dtype``: float32 or wider), and
the domain check behind the library's error messages (``outside``, ``interval``).

>>> import torch
>>> from diffusion_schemes.tensors import append_dims
>>> append_dims(torch.tensor([1.0, 2.0]), 4).shape
torch.Size([2, 1, 1, 1])
"""

from __future__ import annotations

import math
from typing import Any

import torch

from diffusion_schemes.errors import InvalidArgumentError

__all__ = ["append_dims", "compute_dtype", "interval", "outside"]


def append_dims(x: torch.Tensor, target_ndim: int) -> torch.Tensor:
    """``x`` with trailing singleton dims up to ``target_ndim`` dims: ``(B,)`` becomes ``(B, 1, ..., 1)``.

    A scalar (0-dim tensor) is returned as it is: it broadcasts already.

    >>> import torch
    >>> from diffusion_schemes.tensors import append_dims
    >>> append_dims(torch.ones(3), 2).shape, append_dims(torch.tensor(2.0), 4).shape
    (torch.Size([3, 1]), torch.Size([]))
    >>> append_dims(torch.ones(3, 2), 1)
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.InvalidArgumentError: cannot append dims to a tensor of 2 dims to reach 1 dims; target_ndim must be >= 2
    """
    if x.ndim == 0:
        return x
    missing = target_ndim - x.ndim
    if missing < 0:
        raise InvalidArgumentError(
            f"cannot append dims to a tensor of {x.ndim} dims to reach {target_ndim} dims; "
            f"target_ndim must be >= {x.ndim}"
        )
    return x.reshape(*x.shape, *([1] * missing))


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype coefficients are computed in for a latent of ``dtype``: float32 or wider.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> compute_dtype(torch.bfloat16), compute_dtype(torch.float64), compute_dtype(torch.int64)
    (torch.float32, torch.float64, torch.float32)
    """
    return torch.promote_types(dtype, torch.float32) if dtype.is_floating_point else torch.float32


def outside(values: Any, lo: float, hi: float) -> list[float] | None:
    """Up to four of ``values`` (a float tensor) outside the open interval ``(lo, hi)``, NaN included;
    ``None`` when all are inside. One reduction in the common case; the bounds are compared as
    Python floats, so a float32 ``1.0`` is inside ``(0, math.nextafter(1.0, inf))``.

    >>> import math, torch
    >>> from diffusion_schemes.tensors import outside
    >>> outside(torch.tensor([0.5, 1.0]), 0.0, math.nextafter(1.0, math.inf))
    >>> outside(torch.tensor([0.5, float("nan"), 3.0]), 0.0, 2.0)
    [nan, 3.0]
    """
    if not values.numel():
        return None
    low, high = (float(v) for v in values.detach().aminmax())
    if low > lo and high < hi:  # NaN fails both comparisons
        return None
    wide = values.double()
    return values[~((wide > lo) & (wide < hi))].flatten()[:4].tolist()


def interval(lo: float, hi: float) -> str:
    """``(lo, hi)`` as text; an upper bound set just above a round number (room for rounding) reads
    as that number, closed: ``(lo, number]``.

    >>> import math
    >>> from diffusion_schemes.tensors import interval
    >>> interval(0.0, math.inf), interval(0.0, 1.0), interval(0.0, 1.0 + 1e-6)
    ('(0, inf)', '(0, 1)', '(0, 1]')
    """
    shown = f"{hi:g}"
    return f"({lo:g}, {shown}]" if float(shown) < hi else f"({lo:g}, {shown})"
