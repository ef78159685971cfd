"""Schedules whose times are uniform: training draws t uniformly, sampling takes even steps in t.

VP, cosine and flow matching share this; a scheme states its log-SNR and its domains, and
``time_from_uniform`` (the inverse CDF of ``U(t_lo, t_hi)`` on the training domain) and
``timesteps`` (N even steps from the sampling domain's top to its bottom, then 0) follow.

>>> import torch
>>> import diffusion_schemes as ds
>>> class Linear(ds.UniformTimeSchedule):           # lambda = 4 - 8 t on [0.1, 0.9]
...     def __init__(self):
...         super().__init__("linear", "preserving")
...     def get_log_snr(self, t, training=False):
...         return 4 - 8 * self._t(t, training)
...     def get_t_from_log_snr(self, log_snr, training=False):
...         return (4 - self._log_snr(log_snr)) / 8
...     def domain(self, training=False):
...         return (0.1, 0.9)
>>> schedule = Linear()
>>> schedule.validate()
>>> schedule.timesteps(3)
tensor([0.9000, 0.5000, 0.1000, 0.0000], dtype=torch.float64)
>>> schedule.time_from_uniform(torch.tensor([0.0, 0.5], dtype=torch.float64))
tensor([0.1000, 0.5000], dtype=torch.float64)
"""

from __future__ import annotations

from typing import Any

import torch

from diffusion_schemes.schedules.base import BaseNoiseSchedule

__all__ = ["UniformTimeSchedule"]


class UniformTimeSchedule(BaseNoiseSchedule):
    """Training times uniform on ``domain(training=True)``; N even sampling steps on ``domain()``.

    Subclasses implement :meth:`get_log_snr`, :meth:`get_t_from_log_snr` and :meth:`domain`.

    >>> import diffusion_schemes as ds
    >>> vp = ds.create("noise_schedule", "vp")
    >>> isinstance(vp, ds.UniformTimeSchedule), vp.timesteps(2)     # from 1 to epsilon_s, then 0
    (True, tensor([1.0000, 0.0010, 0.0000], dtype=torch.float64))
    """

    def time_from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """``t_lo + (t_hi - t_lo) u`` on the training domain (the inverse CDF of the uniform law)."""
        lo, hi = self.domain(training=True)
        return lo + (hi - lo) * torch.as_tensor(u, dtype=torch.float64)

    def timesteps(self, num_steps: int, device: Any = None) -> torch.Tensor:
        """``t_hi + i / (N - 1) (t_lo - t_hi)`` on the sampling domain, then 0."""
        lo, hi = self.domain()
        return self._with_zero(hi + self._step_fractions(num_steps, device) * (lo - hi))
