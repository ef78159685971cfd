"""EDM preconditioner: Karras et al. 2022, Table 1 (and eq. 7)."""

from __future__ import annotations

import torch

import diffusion_schemes as ds

from . import EDMPreconditionerSpec


class EDMPreconditioner(ds.BaseAffinePreconditioner):
    """EDM preconditioner; the time is the noise level (``sigma(t) = t``).

    ``c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)``,
    ``c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)``,
    ``c_in = 1 / sqrt(sigma^2 + sigma_data^2)``, ``c_noise = ln(sigma) / 4``.
    The output is an x0-prediction; for data of standard deviation ``sigma_data`` the network's
    input and training target both have unit variance at every noise level.

    >>> import torch
    >>> from diffusion_schemes_edm import EDMPreconditioner
    >>> precond = EDMPreconditioner(Backbone(3), sigma_data=0.5)
    >>> precond(torch.randn(2, 3, 16, 16), torch.rand(2) + 0.01, condition=None).shape
    torch.Size([2, 3, 16, 16])
    """

    spec_class = EDMPreconditionerSpec
    unit_variance = ("input", "target")  # for data of std sigma_data: Karras et al. 2022, eqs. 114-118

    def compute_coefficients(self, sigma: torch.Tensor):
        sd = self.sigma_data
        # 1 / sqrt(sigma^2 + sigma_data^2), shared by three coefficients; square() and scalar factors on
        # the right keep every step one tensor operation (a Python-side ** or reversed operator costs more)
        c_in = (sigma.square() + sd**2).rsqrt()
        c_skip = c_in.square() * sd**2
        c_out = sigma * c_in * sd
        c_noise = sigma.log() * 0.25
        return c_in, c_noise, c_out, c_skip
