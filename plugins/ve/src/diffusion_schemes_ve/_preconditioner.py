"""VE preconditioner: Karras et al. 2022, Table 1, column "VE" (Song et al. 2021)."""

from __future__ import annotations

import torch

import diffusion_schemes as ds

from . import VEPreconditionerSpec


class VEPreconditioner(ds.BaseAffinePreconditioner):
    """Variance-exploding preconditioner; the time is the noise level (``sigma(t) = t``).

    ``c_skip = 1``, ``c_out = sigma``, ``c_in = 1``, ``c_noise = ln(sigma / 2)``
    (Karras et al. 2022, Table 1). The output is an x0-prediction; the network's training
    target ``(x0 - x) / sigma = -eps`` has unit variance, its input does not (VE leaves the
    latent unscaled).

    >>> import torch
    >>> from diffusion_schemes_ve import VEPreconditioner
    >>> precond = VEPreconditioner(Backbone(3))
    >>> precond(torch.randn(2, 3, 16, 16), torch.tensor([0.5, 20.0])).shape
    torch.Size([2, 3, 16, 16])
    >>> c_in, c_noise, c_out, c_skip = precond.coefficients(torch.tensor([2.0]), ndim=2)
    >>> float(c_in), float(c_noise), float(c_out), float(c_skip)   # ln(2 / 2) = 0
    (1.0, 0.0, 2.0, 1.0)
    """

    spec_class = VEPreconditionerSpec
    unit_variance = ("target",)  # the target is -eps whatever the data (Karras et al. 2022, Table 1)

    def compute_coefficients(self, sigma: torch.Tensor):
        one = torch.ones_like(sigma)
        return one, (0.5 * sigma).log(), sigma, one
