"""Sliced Wasserstein distance between two sample sets (Rabin et al. 2011; Bonneel et al. 2015, eq. 7).

``SW_2(X, Y)^2 = E_theta[W_2(theta . X, theta . Y)^2]`` over directions ``theta`` uniform on the
unit sphere. In one dimension the optimal coupling of two empirical measures with ``n`` points
each pairs the sorted values, so ``W_2^2 = mean_i (x_(i) - y_(i))^2``; the expectation is
estimated with ``projections`` fixed random directions. With equal sample sizes the distance
between two independent draws of the same distribution is the floor a perfect generator sees.

>>> import torch
>>> from diffusion_schemes_trainer import sliced_wasserstein
>>> x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
>>> float(sliced_wasserstein(x, x))
0.0
>>> round(float(sliced_wasserstein(x, x + torch.tensor([3.0, 0.0]))), 1)  # shift 3: exactly 3 / sqrt(2)
2.1
"""

from __future__ import annotations

import torch

from ..errors import TrainerError

__all__ = ["sliced_wasserstein"]


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, projections: int = 512, seed: int = 0) -> torch.Tensor:
    """``SW_2`` between samples ``x`` and ``y`` (``n`` each, flattened after the batch dim), in float64.

    The directions come from ``seed``, so two calls with the same seed use the same directions.
    """
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    y = y.reshape(y.shape[0], -1).to(torch.float64).to(x.device)
    if x.shape != y.shape:
        raise TrainerError(f"sliced_wasserstein needs two sets of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    theta = torch.randn(x.shape[1], projections, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y @ theta, dim=0)
    return ((px - py) ** 2).mean().sqrt()
