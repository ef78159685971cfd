"""VP noise schedule: Karras et al. 2022, Table 1, column "VP" (Song et al. 2021, eq. 33)."""

from __future__ import annotations

from typing import Any

import torch

import diffusion_schemes as ds

from . import VPNoiseScheduleSpec
from ._time import VPTime


class VPNoiseSchedule(ds.UniformTimeSchedule):
    """Variance preserving, ``lambda(t) = -log(expm1(beta_d t^2 / 2 + beta_min t))``.

    The forward process is scaled: ``alpha(t) = 1 / sqrt(1 + sigma(t)^2)`` with the noise level
    ``sigma(t) = sqrt(exp(beta_d t^2/2 + beta_min t) - 1)``, both following from lambda and the
    variance-preserving ``alpha^2 = sigmoid(lambda)``. ``d lambda / dt`` is in closed form.
    Training draws ``t ~ U(epsilon_t, 1)``; sampling times are
    ``t_i = 1 + i / (N - 1) (epsilon_s - 1)``, then 0 (Karras et al. 2022, Table 1). The default
    weighting is ``1/sigma^2`` on the x0-loss (``"snr"``).

    >>> import torch
    >>> from diffusion_schemes_vp import VPNoiseSchedule
    >>> schedule = VPNoiseSchedule()
    >>> schedule.timesteps(3)
    tensor([1.0000, 0.5005, 0.0010, 0.0000], dtype=torch.float64)
    >>> alpha, sigma = schedule.get_alpha_sigma(schedule.get_log_snr(torch.tensor(0.5)))
    >>> level = schedule.noise_level(torch.tensor(0.5))
    >>> bool(torch.isclose(alpha, 1 / (1 + level**2).sqrt())), bool(torch.isclose(sigma / alpha, level))
    (True, True)
    """

    spec_class = VPNoiseScheduleSpec
    variance_type = "preserving"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.time = VPTime(self.beta_d, self.beta_min)

    def get_log_snr(self, t: Any, training: bool = False) -> torch.Tensor:
        return -self.time.log_noise_level_sq(self._t(t, training))

    def get_t_from_log_snr(self, log_snr: Any, training: bool = False) -> torch.Tensor:
        return self.time.time_from_log_noise_level_sq(-self._log_snr(log_snr))

    def dlog_snr_dt(self, t: Any, training: bool = False) -> torch.Tensor:
        return -self.time.dlog_noise_level_sq_dt(self._t(t, training))

    def noise_level(self, t: Any) -> torch.Tensor:
        return self.time.noise_level(self._t(t))

    def domain(self, training: bool = False) -> tuple[float, float]:
        return (self.epsilon_t if training else self.epsilon_s), 1.0
