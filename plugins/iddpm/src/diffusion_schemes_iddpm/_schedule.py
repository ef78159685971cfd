"""iDDPM noise schedule: Karras et al. 2022, Table 1, column "iDDPM", with t = sigma: time is the noise level, as for every variance-exploding scheme here."""

from __future__ import annotations

from typing import Any

import torch

import diffusion_schemes as ds

from . import IDDPMNoiseScheduleSpec
from ._table import noise_level_table


class IDDPMNoiseSchedule(ds.SigmaTimeSchedule):
    """Variance exploding on the iDDPM noise levels, ``t = sigma`` and ``lambda(t) = -2 ln t``.

    Karras et al. 2022 (Table 1) run iDDPM with ``s(t) = 1``, ``sigma(t) = t`` on the table
    ``u_0 > ... > u_M = 0`` (:func:`~diffusion_schemes_iddpm.noise_level_table`). Training draws
    ``sigma = u_j`` with ``j`` uniform in ``{0, ..., M - 1}``; sampling times are
    ``t_i = u[floor(j0 + (M - 1 - j0) i / (N - 1) + 1/2)]``, then 0. Both domains are
    ``[u_{M-1}, u_0]``. The default weighting is ``1/sigma^2`` on the x0-loss (``"snr"``).

    >>> import torch
    >>> from diffusion_schemes_iddpm import IDDPMNoiseSchedule, noise_level_table
    >>> schedule = IDDPMNoiseSchedule()
    >>> u = noise_level_table()
    >>> bool((schedule.timesteps(3) == torch.cat([u[[8, 504, 999]], torch.zeros(1, dtype=torch.float64)])).all())
    True
    >>> lo, hi = schedule.domain()
    >>> round(lo, 5), round(hi)
    (0.00643, 20291)
    """

    spec_class = IDDPMNoiseScheduleSpec

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.u = noise_level_table(self.C_1, self.C_2, self.M)

    def domain(self, training: bool = False) -> tuple[float, float]:
        return float(self.u[self.M - 1]), float(self.u[0])

    def time_from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """``u_j`` with ``j = M - 1 - floor(u M)``: j uniform in ``{0, ..., M-1}``, t nondecreasing in u."""
        u = torch.as_tensor(u, dtype=torch.float64)
        j = (self.M - 1 - torch.floor(u * self.M).long()).clamp(0, self.M - 1)  # u_j decreases with j
        return self.u.to(j.device)[j]

    def timesteps(self, num_steps: int, device: Any = None) -> torch.Tensor:
        i = self._step_fractions(num_steps)
        j = torch.floor(self.j0 + (self.M - 1 - self.j0) * i + 0.5).long()
        return self._with_zero(self.u[j]).to(device)
