"""VP preconditioner: Karras et al. 2022, Table 1, column "VP" (Song et al. 2021)."""

from __future__ import annotations

from typing import Any

import torch

import diffusion_schemes as ds

from . import VPPreconditionerSpec
from ._time import VPTime


class VPPreconditioner(ds.EpsilonPreconditioner):
    """Variance-preserving preconditioner with ``sigma(t) = sqrt(exp(beta_d t^2/2 + beta_min t) - 1)``.

    ``c_skip = 1``, ``c_out = -sigma``, ``c_in = 1 / sqrt(sigma^2 + 1)``,
    ``c_noise = (M - 1) sigma^{-1}(sigma)`` (Karras et al. 2022, Table 1). The latent it
    receives is unscaled (``x = x0 + sigma eps``), so ``c_in x`` is exactly the scaled VP latent
    ``alpha x0 + sqrt(1 - alpha^2) eps`` a DDPM network expects; the network predicts ``eps``
    and the output is an x0-prediction. Input and target have unit variance for
    unit-variance data.

    >>> import torch
    >>> from diffusion_schemes_vp import VPPreconditioner
    >>> precond = VPPreconditioner(Backbone(3), beta_d=19.9, beta_min=0.1, M=1000)
    >>> precond(torch.randn(2, 3, 16, 16), torch.tensor([0.25, 0.75])).shape
    torch.Size([2, 3, 16, 16])
    >>> sigma = precond.sigma(torch.tensor([0.5], dtype=torch.float64))
    >>> c_in, c_noise, c_out, c_skip = precond.coefficients(sigma, ndim=2)
    >>> round(float(c_noise), 9)       # (M - 1) t recovered from sigma
    499.5
    """

    spec_class = VPPreconditionerSpec
    unit_variance = ("input", "target")  # for unit-variance data (Karras et al. 2022, Table 1)

    def __init__(self, model: Any, *args: Any, meta: Any = None, **kwargs: Any) -> None:
        super().__init__(model, *args, meta=meta, **kwargs)
        self.time = VPTime(self.beta_d, self.beta_min)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.time.noise_level(t)

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        return (self.M - 1) * self.time.time_from_noise_level(sigma)
