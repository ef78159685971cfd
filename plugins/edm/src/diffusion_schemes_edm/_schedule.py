"""EDM noise schedule: Karras et al. 2022, Table 1 and eq. 5."""

from __future__ import annotations

import math
from typing import Any

import torch

import diffusion_schemes as ds

from . import EDMNoiseScheduleSpec


class EDMNoiseSchedule(ds.SigmaTimeSchedule):
    """EDM: variance exploding with ``t = sigma``, so ``lambda(t) = -2 ln t``.

    Sampling times follow eq. 5,
    ``t_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``, then 0;
    training draws ``ln sigma ~ N(P_mean, P_std^2)``. The default weighting is EDM's.

    >>> from diffusion_schemes_edm import EDMNoiseSchedule
    >>> schedule = EDMNoiseSchedule()
    >>> schedule.timesteps(3)
    tensor([8.0000e+01, 2.5152e+00, 2.0000e-03, 0.0000e+00], dtype=torch.float64)
    >>> schedule.weighting
    EDMWeighting(sigma_data=0.5)
    """

    spec_class = EDMNoiseScheduleSpec

    def domain(self, training: bool = False) -> tuple[float, float]:
        if training:  # ln sigma within 4.5 standard deviations: all but ~7e-6 of the draws
            return math.exp(self.P_mean - 4.5 * self.P_std), math.exp(self.P_mean + 4.5 * self.P_std)
        return self.sigma_min, self.sigma_max

    def time_from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """``exp(P_mean + P_std Phi^-1(u))``: the log-normal quantile (u kept off 0 and 1)."""
        u = torch.as_tensor(u, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        return torch.exp(self.P_mean + self.P_std * torch.special.ndtri(u))

    def timesteps(self, num_steps: int, device: Any = None) -> torch.Tensor:
        i = self._step_fractions(num_steps, device)
        inv_rho = 1 / self.rho
        ramp = self.sigma_max**inv_rho + i * (self.sigma_min**inv_rho - self.sigma_max**inv_rho)
        return self._with_zero(ramp**self.rho)

    def default_weighting(self) -> Any:
        return ds.create("weighting", {"name": "edm", "sigma_data": self.sigma_data})
