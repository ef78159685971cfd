"""Variance-exploding schedules whose diffusion time is the noise level (EDM, VE, iDDPM; docs/architecture.md, "the contract").

With ``t = sigma`` and ``alpha = 1`` the log-SNR is ``lambda(t) = -2 ln t``; that, its inverse,
its derivative and the noise level are stated here once. A scheme adds its domains, its
training distribution and its sampling times.

>>> import torch
>>> import diffusion_schemes as ds
>>> class LogUniform(ds.SigmaTimeSchedule):
...     def __init__(self, weighting="default"):
...         super().__init__("log-uniform", weighting)
...     def domain(self, training=False):
...         return (0.01, 10.0)
...     def sample_time(self, n, generator=None, device=None):
...         return 0.01 * 1000.0 ** torch.rand(n, generator=generator, device=device)
...     def timesteps(self, num_steps, device=None):
...         i = torch.arange(num_steps, dtype=torch.float64, device=device) / max(num_steps - 1, 1)
...         return self._with_zero(10.0 * 0.001**i)
>>> schedule = LogUniform()
>>> schedule.validate()
>>> schedule.get_log_snr(torch.tensor([1.0, 2.0])), schedule.noise_level(torch.tensor([2.0]))
(tensor([-0.0000, -1.3863]), tensor([2.]))
"""

from __future__ import annotations

from typing import Any

import torch

from diffusion_schemes.schedules.base import BaseNoiseSchedule

__all__ = ["SigmaTimeSchedule"]


class SigmaTimeSchedule(BaseNoiseSchedule):
    """Variance exploding with ``t = sigma``: ``lambda(t) = -2 ln t``, ``d lambda/dt = -2 / t``.

    Subclasses implement :meth:`domain`, :meth:`sample_time` and :meth:`timesteps`.

    Args:
        name: the schedule's name.
        weighting: as for :class:`BaseNoiseSchedule`.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> ve = ds.create("noise_schedule", "ve")
    >>> isinstance(ve, ds.SigmaTimeSchedule), ve.noise_level(torch.tensor([0.5, 2.0]))
    (True, tensor([0.5000, 2.0000]))
    >>> ve.get_t_from_log_snr(ve.get_log_snr(torch.tensor([0.5, 2.0])))      # the round trip
    tensor([0.5000, 2.0000])
    """

    variance_type = "exploding"

    @staticmethod
    def _unspecced(name: str, weighting: Any = None) -> tuple[str, str, Any]:
        """A schedule without ``spec_class`` passes its name and weighting."""
        return name, "exploding", weighting

    def get_log_snr(self, t: Any, training: bool = False) -> torch.Tensor:
        """``lambda(t) = -2 ln t``.

        >>> import diffusion_schemes as ds
        >>> ds.create("noise_schedule", "ve").get_log_snr(1.0)
        tensor(-0.)
        """
        return -2 * self._t(t, training).log()

    def get_t_from_log_snr(self, log_snr: Any, training: bool = False) -> torch.Tensor:
        """``t = exp(-lambda / 2)``.

        >>> import diffusion_schemes as ds
        >>> ds.create("noise_schedule", "ve").get_t_from_log_snr(0.0)
        tensor(1.)
        """
        return torch.exp(-self._log_snr(log_snr) / 2)

    def dlog_snr_dt(self, t: Any, training: bool = False) -> torch.Tensor:
        """``d lambda / dt = -2 / t``.

        >>> import diffusion_schemes as ds
        >>> ds.create("noise_schedule", "ve").dlog_snr_dt(4.0)
        tensor(-0.5000)
        """
        return -2 / self._t(t, training)

    def log_snr_and_noise_level(self, t: Any, training: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(-2 ln t, t)``: the noise level is the time itself, checked once.

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> ds.create("noise_schedule", "ve").log_snr_and_noise_level(torch.tensor([1.0, 0.5]))
        (tensor([-0.0000, 1.3863]), tensor([1.0000, 0.5000]))
        """
        t = self._t(t, training)
        return t.log() * -2, t

    def noise_level(self, t: Any) -> torch.Tensor:
        """The time itself (exactly, without the round trip through lambda).

        >>> import diffusion_schemes as ds
        >>> ds.create("noise_schedule", "ve").noise_level(0.25)
        tensor(0.2500)
        """
        return self._t(t)
