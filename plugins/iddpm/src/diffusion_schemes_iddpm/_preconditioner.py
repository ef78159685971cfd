"""iDDPM preconditioner: Karras et al. 2022, Table 1, column "iDDPM" (Nichol & Dhariwal 2021)."""

from __future__ import annotations

from typing import Any

import torch

import diffusion_schemes as ds

from . import IDDPMPreconditionerSpec
from ._table import noise_level_table


class IDDPMPreconditioner(ds.EpsilonPreconditioner):
    """iDDPM preconditioner; the time is the noise level (``sigma(t) = t``).

    ``c_skip = 1``, ``c_out = -sigma``, ``c_in = 1 / sqrt(sigma^2 + 1)``,
    ``c_noise = M - 1 - argmin_j |sigma - u_j|`` over the table ``u_0 ... u_M`` of
    :func:`~diffusion_schemes_iddpm.noise_level_table` (Karras et al. 2022, Table 1). ``c_noise``
    is the DDPM step index the network was trained with, handed over as a float tensor in
    float32 or wider (so labels above 256 stay distinct for bfloat16 latents). The network
    predicts ``eps`` from the scaled latent; the output is an x0-prediction.

    >>> import torch
    >>> from diffusion_schemes_iddpm import IDDPMPreconditioner, noise_level_table
    >>> precond = IDDPMPreconditioner(Backbone(3), C_1=0.001, C_2=0.008, M=1000)
    >>> precond(torch.randn(2, 3, 16, 16), torch.tensor([0.1, 10.0])).shape
    torch.Size([2, 3, 16, 16])
    >>> u = noise_level_table()
    >>> precond.coefficients(u[[0, 500, 999]], ndim=2)[1]      # c_noise = M - 1 - j
    tensor([999., 499.,   0.], dtype=torch.float64)
    """

    spec_class = IDDPMPreconditionerSpec
    unit_variance = ("input", "target")  # for unit-variance data (Karras et al. 2022, Table 1)

    def __init__(self, model: Any, *args: Any, meta: Any = None, **kwargs: Any) -> None:
        super().__init__(model, *args, meta=meta, **kwargs)
        self.u = noise_level_table(self.C_1, self.C_2, self.M)

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        u = self.u.to(device=sigma.device, dtype=sigma.dtype)
        j = (sigma.unsqueeze(-1) - u).abs().argmin(-1)
        return (self.M - 1 - j).to(sigma.dtype)
