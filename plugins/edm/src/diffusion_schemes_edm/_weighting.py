"""EDM loss weighting: Karras et al. 2022, Table 1 (lambda(sigma) of eq. 8)."""

from __future__ import annotations

from typing import Any

import torch

import diffusion_schemes as ds

from . import EDMWeightingSpec


class EDMWeighting(ds.BaseWeighting):
    """``(sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = exp(lambda) + 1/sigma_data^2`` on the x0-loss.

    With the EDM preconditioner this makes the effective weight on the network's own
    output ``c_out^2 * weight = 1`` at every noise level.

    >>> import torch
    >>> from diffusion_schemes_edm import EDMWeighting
    >>> sigma = torch.tensor(0.5)
    >>> float(EDMWeighting(0.5)(-2 * sigma.log()))    # (0.25 + 0.25) / 0.0625
    8.0
    """

    loss_type = "x0"
    spec_class = EDMWeightingSpec

    def weight(self, log_snr: torch.Tensor, schedule: Any = None) -> torch.Tensor:
        return log_snr.exp() + 1 / self.sigma_data**2  # a method: compiled, no guard on torch.exp
