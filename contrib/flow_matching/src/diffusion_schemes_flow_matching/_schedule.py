"""Rectified-flow schedule in log-SNR form (Liu et al. 2023; Kingma & Gao 2023, appendix D.3)."""

from __future__ import annotations

from typing import Any

import torch

import diffusion_schemes as ds

from . import FlowMatchingNoiseScheduleSpec


class FlowMatchingNoiseSchedule(ds.BaseNoiseSchedule):
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

    def __init__(self, t_min: float = 1e-3, t_max: float = 0.999, weighting: Any = "default") -> None:
        if not 0 < t_min < t_max < 1:
            raise ValueError(f"need 0 < t_min < t_max < 1, got t_min={t_min}, t_max={t_max}")
        self.t_min, self.t_max = float(t_min), float(t_max)
        super().__init__("flow_matching", "custom", weighting)

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

    def time_from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """The inverse CDF of the training times (uniform on ``[t_min, t_max]``) at ``u`` in ``[0, 1)``."""
        return self.t_min + (self.t_max - self.t_min) * torch.as_tensor(u, dtype=torch.float64)

    def timesteps(self, num_steps: int, device: Any = None) -> torch.Tensor:
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        i = torch.arange(num_steps, dtype=torch.float64, device=device) / max(num_steps - 1, 1)
        return self._with_zero(self.t_max + i * (self.t_min - self.t_max))

    def default_weighting(self) -> Any:
        return ds.create("weighting", "flow_matching_velocity")

    def get_config(self) -> dict[str, Any]:
        return {"t_min": self.t_min, "t_max": self.t_max, "weighting": self._weighting_config()}
