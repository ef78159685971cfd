"""The ``discrete`` noise schedule: a DDPM noise table, variance preserving, with time = noise level."""

from __future__ import annotations

from typing import Any

import torch

import diffusion_schemes as ds

from . import DiscreteNoiseScheduleSpec
from ._table import TableMixin


class DiscreteNoiseSchedule(TableMixin, ds.BaseNoiseSchedule):
    """Variance preserving on a DDPM table, with ``t = sigma`` and ``lambda(t) = -2 ln t``.

    The forward process is DDPM's ``z = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps``: with
    ``sigma^2 = (1 - alpha_bar) / alpha_bar``, ``alpha = 1 / sqrt(1 + sigma^2)`` (Karras et al.
    2022, Table 1, "VP"). The time is the noise level, as for iDDPM, so ``lambda`` and its
    derivative are closed forms; the table enters through the domains, the training draws and the
    sampling grid:

    - both domains are ``[sigma_0, sigma_{T-1}]``, the ends of the table;
    - training draws ``sigma_j`` with ``j`` uniform in ``{0, ..., T - 1}`` (DDPM's training);
    - the sampling grid is diffusers' default ``linspace`` spacing: the noise levels at
      ``N`` timesteps evenly from ``T - 1`` to 0 (through :meth:`sigma_at_timestep`), then 0.

    :meth:`timestep` and :meth:`sigma_at_timestep` map noise levels to the network's timesteps and
    back (``interpolation`` between entries). The default weighting is ``1/sigma^2`` on the
    x0-loss, uniform on the epsilon-loss: DDPM's simple loss.

    >>> import torch
    >>> from diffusion_schemes_diffusers import DiscreteNoiseSchedule
    >>> s = DiscreteNoiseSchedule(beta_schedule="squaredcos_cap_v2")
    >>> bool(torch.equal(s.timesteps(2)[:2], s.table_sigmas[[999, 0]]))
    True
    >>> z = s.add_noise(torch.ones(1, 1), s.table_sigmas[[500]], noise=torch.zeros(1, 1))
    >>> bool(torch.isclose(z.double(), s.alphas_cumprod[500].sqrt(), rtol=1e-6).all())
    True
    """

    spec_class = DiscreteNoiseScheduleSpec
    variance_type = "preserving"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_table(self.spec)

    def get_log_snr(self, t: Any, training: bool = False) -> torch.Tensor:
        return -2 * self._t(t, training).log()

    def get_t_from_log_snr(self, log_snr: Any, training: bool = False) -> torch.Tensor:
        return torch.exp(-self._log_snr(log_snr) / 2)

    def dlog_snr_dt(self, t: Any, training: bool = False) -> torch.Tensor:
        return -2 / self._t(t, training)

    def noise_level(self, t: Any) -> torch.Tensor:
        return self._t(t)

    def domain(self, training: bool = False) -> tuple[float, float]:
        return float(self.table_sigmas[0]), float(self.table_sigmas[-1])

    def time_from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """``sigma_j`` with ``j = floor(u T)``: a uniform table entry, nondecreasing in u."""
        u = torch.as_tensor(u, dtype=torch.float64)
        j = torch.floor(u * self.num_train_timesteps).long().clamp(0, self.num_train_timesteps - 1)
        return self.table_sigmas.to(j.device)[j]

    def timesteps(self, num_steps: int, device: Any = None) -> torch.Tensor:
        steps = (self.num_train_timesteps - 1) * (1 - self._step_fractions(num_steps))
        return self._with_zero(self.sigma_at_timestep(steps)).to(device)
