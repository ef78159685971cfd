"""EDM noise schedule: Karras et al. 2022, Table 1 and eq. 5."""

from __future__ import annotations

import math
from typing import Any

import torch

import diffusion_schemes as ds
from diffusion_schemes._errors import InvalidArgumentError

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

    def __init__(
        self,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        sigma_data: float = 0.5,
        P_mean: float = -1.2,
        P_std: float = 1.2,
        weighting: Any = "default",
    ) -> None:
        if not 0 < sigma_min < sigma_max:
            raise InvalidArgumentError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        if not (rho > 0 and sigma_data > 0 and P_std > 0):
            raise InvalidArgumentError("rho, sigma_data and P_std must be > 0")
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)
        self.sigma_data, self.P_mean, self.P_std = float(sigma_data), float(P_mean), float(P_std)
        super().__init__("edm", weighting)

    def domain(self, training: bool = False) -> tuple[float, float]:
        if training:  # ln sigma within 4.5 standard deviations: all but ~7e-6 of the draws
            return math.exp(self.P_mean - 4.5 * self.P_std), math.exp(self.P_mean + 4.5 * self.P_std)
        return self.sigma_min, self.sigma_max

    def time_from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """``exp(P_mean + P_std Phi^-1(u))``: the log-normal quantile (u kept off 0 and 1)."""
        u = torch.as_tensor(u, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        return torch.exp(self.P_mean + self.P_std * torch.special.ndtri(u))

    def timesteps(self, num_steps: int, device: Any = None) -> torch.Tensor:
        if num_steps < 1:
            raise InvalidArgumentError(f"num_steps must be >= 1, got {num_steps}")
        i = torch.arange(num_steps, dtype=torch.float64, device=device)
        inv_rho = 1 / self.rho
        ramp = self.sigma_max**inv_rho + i / max(num_steps - 1, 1) * (self.sigma_min**inv_rho - self.sigma_max**inv_rho)
        return self._with_zero(ramp**self.rho)

    def default_weighting(self) -> Any:
        return ds.create("weighting", {"name": "edm", "sigma_data": self.sigma_data})

    def get_config(self) -> dict[str, Any]:
        return {
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
            "rho": self.rho,
            "sigma_data": self.sigma_data,
            "P_mean": self.P_mean,
            "P_std": self.P_std,
            "weighting": self._weighting_config(),
        }
