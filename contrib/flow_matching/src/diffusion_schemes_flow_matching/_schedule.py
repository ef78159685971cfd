"""Rectified-flow schedule in log-SNR form (Liu et al. 2023; Kingma & Gao 2023, appendix D.3)."""

from __future__ import annotations

from typing import Any

import torch

import diffusion_schemes as ds

from . import FlowMatchingNoiseScheduleSpec


class FlowMatchingNoiseSchedule(ds.UniformTimeSchedule):
    """``alpha = 1 - t``, ``sigma = t``: ``lambda(t) = 2 log((1 - t) / t)``, variance type ``custom``.

    Inverse ``t = sigmoid(-lambda / 2)``; ``d lambda / dt = -2 / (t (1 - t))``. Given lambda,
    ``alpha = sigmoid(lambda / 2)`` and ``sigma = sigmoid(-lambda / 2)`` (so ``alpha + sigma = 1``).
    Training draws t uniformly on ``[t_min, t_max]``; sampling takes N even steps from ``t_max``
    to ``t_min``, then 0. The default weighting is uniform on the velocity loss
    (``flow_matching_velocity``).

    >>> import torch
    >>> from diffusion_schemes_flow_matching import FlowMatchingNoiseSchedule
    >>> s = FlowMatchingNoiseSchedule()
    >>> float(s.noise_level(torch.tensor(0.5)))          # t / (1 - t)
    1.0
    """

    spec_class = FlowMatchingNoiseScheduleSpec
    t_limits = (0.0, 1.0)
    variance_type = "custom"

    def get_log_snr(self, t: Any, training: bool = False) -> torch.Tensor:
        t = self._t(t, training)
        return 2 * (torch.log1p(-t) - torch.log(t))

    def get_t_from_log_snr(self, log_snr: Any, training: bool = False) -> torch.Tensor:
        return torch.sigmoid(-self._log_snr(log_snr) / 2)

    def dlog_snr_dt(self, t: Any, training: bool = False) -> torch.Tensor:
        t = self._t(t, training)
        return -2 / (t * (1 - t))

    def get_alpha_sigma(self, log_snr: Any) -> tuple[torch.Tensor, torch.Tensor]:
        log_snr = self._log_snr(log_snr)
        return torch.sigmoid(log_snr / 2), torch.sigmoid(-log_snr / 2)

    def domain(self, training: bool = False) -> tuple[float, float]:
        return self.t_min, self.t_max

    def default_weighting(self) -> Any:
        return ds.create("weighting", "flow_matching_velocity")
