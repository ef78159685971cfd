"""Velocity prediction as an affine preconditioner in the unscaled convention."""

from __future__ import annotations

import torch

import diffusion_schemes as ds

from . import FlowMatchingPreconditionerSpec


class FlowMatchingPreconditioner(ds.BaseAffinePreconditioner):
    """A network ``F`` trained to predict the velocity ``v = eps - x0`` of ``z_t = (1 - t) x0 + t eps``.

    Its time is the flow time t, so ``sigma(t) = t / (1 - t)`` (the noise level
    ``exp(-lambda / 2)``) and, inversely, ``t = s / (1 + s)`` for noise level ``s``. The
    preconditioner receives the unscaled latent ``x = z / alpha = x0 + s eps``; the network
    expects ``z = (1 - t) x``, so ``c_in = 1 - t = 1 / (1 + s)`` and ``c_noise = t = s / (1 + s)``.
    Since ``z - t v = (1 - t) x0 + t eps - t (eps - x0) = x0``, the x0-prediction is
    ``D = (1 - t) x - t F``: ``c_skip = 1 / (1 + s)``, ``c_out = -s / (1 + s)``
    (Liu et al. 2023, eq. 1; Lipman et al. 2023, eq. 23 with sigma_min = 0).

    >>> import torch
    >>> from diffusion_schemes_flow_matching import FlowMatchingPreconditioner
    >>> x0, eps, t = torch.randn(4, 3), torch.randn(4, 3), torch.full((4,), 0.3)
    >>> oracle = lambda z, c_noise, condition=None: eps - x0     # the true velocity
    >>> x_hat = x0 + t[:, None] / (1 - t[:, None]) * eps          # unscaled latent
    >>> torch.allclose(FlowMatchingPreconditioner(oracle)(x_hat, t), x0, atol=1e-6)
    True
    """

    spec_class = FlowMatchingPreconditionerSpec
    t_limits = (0.0, 1.0)  # t = 1 is pure noise: sigma(t) = t / (1 - t) is infinite there

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return t / (1 - t)

    def compute_coefficients(self, sigma: torch.Tensor):
        one_minus_t = 1 / (1 + sigma)
        t = sigma / (1 + sigma)
        return one_minus_t, t, -t, one_minus_t
