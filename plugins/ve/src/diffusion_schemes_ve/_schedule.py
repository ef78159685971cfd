"""VE noise schedule: Karras et al. 2022, Table 1, column "VE", with t = sigma: time is the noise level, as for every variance-exploding scheme here."""

from __future__ import annotations

import math
from typing import Any

import torch

import diffusion_schemes as ds

from . import VENoiseScheduleSpec


class VENoiseSchedule(ds.SigmaTimeSchedule):
    """Variance exploding with ``t = sigma``, so ``lambda(t) = -2 ln t``.

    Song et al. 2021 write the VE time as ``sigma(t) = sigma_min (sigma_max/sigma_min)^t``; here
    the time is the noise level itself (as in EDM), which leaves the sampling noise levels and
    the training distribution unchanged. Sampling times (Karras et al. 2022, Table 1):
    ``t_i = sigma_max (sigma_min / sigma_max)^(i / (N - 1))``, then 0; training draws
    ``ln sigma ~ U(ln sigma_min, ln sigma_max)``. The default weighting is ``1/sigma^2`` on the
    x0-loss (``"snr"``).

    >>> import torch
    >>> from diffusion_schemes_ve import VENoiseSchedule
    >>> schedule = VENoiseSchedule()
    >>> schedule.timesteps(3)
    tensor([1.0000e+02, 1.4142e+00, 2.0000e-02, 0.0000e+00], dtype=torch.float64)
    >>> float(schedule.noise_level(torch.tensor(3.0)))
    3.0
    >>> t = schedule.sample_time(4, generator=torch.Generator().manual_seed(0))
    >>> bool(((t >= 0.02) & (t <= 100.0)).all())
    True
    >>> schedule.weighting
    SNRWeighting()
    """

    spec_class = VENoiseScheduleSpec

    def domain(self, training: bool = False) -> tuple[float, float]:
        return self.sigma_min, self.sigma_max

    def time_from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """``sigma_min (sigma_max / sigma_min)^u``: log-uniform noise levels."""
        u = torch.as_tensor(u, dtype=torch.float64)
        return torch.exp(math.log(self.sigma_min) + u * math.log(self.sigma_max / self.sigma_min))

    def timesteps(self, num_steps: int, device: Any = None) -> torch.Tensor:
        i = self._step_fractions(num_steps, device)
        return self._with_zero(self.sigma_max * (self.sigma_min / self.sigma_max) ** i)
