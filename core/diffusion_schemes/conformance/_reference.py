"""The kit's own reference schedule, used where a check needs a schedule and none is paired.

Variance exploding with the time equal to the noise level (the core's
:class:`~diffusion_schemes.SigmaTimeSchedule`, ``lambda(t) = -2 log t``; Karras et al. 2022,
Table 1, ``sigma(t) = t``, ``s(t) = 1``), geometric sampling steps and log-uniform training
times. It is deliberately plain so a weighting or solver is checked against a schedule whose
every quantity has a closed form; it is not registered.

>>> from diffusion_schemes.conformance._reference import ReferenceSchedule
>>> s = ReferenceSchedule(0.01, 100.0)
>>> s.validate()
>>> s.timesteps(3).tolist()
[100.0, 1.0, 0.01, 0.0]
"""

from __future__ import annotations

from typing import Any

import torch

from diffusion_schemes.schedules.sigma_time import SigmaTimeSchedule

__all__ = ["ReferenceSchedule"]


class ReferenceSchedule(SigmaTimeSchedule):
    """``t`` = noise level on ``[sigma_min, sigma_max]``, geometric steps, log-uniform training, no weighting."""

    def __init__(self, sigma_min: float = 1e-3, sigma_max: float = 1e3) -> None:
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        super().__init__("conformance-reference", None)

    def domain(self, training: bool = False) -> tuple[float, float]:
        return self.sigma_min, self.sigma_max

    def time_from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """Log-uniform: ``sigma_min (sigma_max / sigma_min)^u``."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** torch.as_tensor(u, dtype=torch.float64)

    def timesteps(self, num_steps: int, device: Any = None) -> torch.Tensor:
        i = torch.arange(num_steps, dtype=torch.float64, device=device) / max(num_steps - 1, 1)
        return self._with_zero(self.sigma_max * (self.sigma_min / self.sigma_max) ** i)

    def get_config(self) -> dict[str, Any]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}
