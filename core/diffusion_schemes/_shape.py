"""Shape helper: per-sample values broadcast against a batch of latents.

>>> import torch
>>> from diffusion_schemes._shape import append_dims
>>> append_dims(torch.tensor([1.0, 2.0]), 4).shape
torch.Size([2, 1, 1, 1])
"""

from __future__ import annotations

import torch

__all__ = ["append_dims"]


def append_dims(x: torch.Tensor, target_ndim: int) -> torch.Tensor:
    """``x`` with trailing singleton dims up to ``target_ndim`` dims: ``(B,)`` becomes ``(B, 1, ..., 1)``.

    A scalar (0-dim tensor) is returned as it is: it broadcasts already.

    >>> import torch
    >>> from diffusion_schemes._shape import append_dims
    >>> append_dims(torch.ones(3), 2).shape, append_dims(torch.tensor(2.0), 4).shape
    (torch.Size([3, 1]), torch.Size([]))
    >>> append_dims(torch.ones(3, 2), 1)
    Traceback (most recent call last):
      ...
    ValueError: cannot append dims to a tensor of 2 dims to reach 1 dims; target_ndim must be >= 2
    """
    if x.ndim == 0:
        return x
    missing = target_ndim - x.ndim
    if missing < 0:
        raise ValueError(
            f"cannot append dims to a tensor of {x.ndim} dims to reach {target_ndim} dims; "
            f"target_ndim must be >= {x.ndim}"
        )
    return x.reshape(*x.shape, *([1] * missing))
