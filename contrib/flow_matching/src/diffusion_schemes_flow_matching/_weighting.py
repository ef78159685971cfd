"""Uniform weight on the velocity loss, expressed on the x0-loss."""

from __future__ import annotations

from typing import Any

import torch

import diffusion_schemes as ds

from . import VelocityWeightingSpec


class VelocityWeighting(ds.BaseWeighting):
    """``w = (1 + exp(lambda / 2))^2 = 1 / t^2`` on the x0-loss: the rectified-flow loss ``||v - v_hat||^2``.

    With ``x0_hat = z - t v_hat``, ``||x0 - x0_hat||^2 = t^2 ||v - v_hat||^2``, and
    ``t = sigmoid(-lambda / 2) = 1 / (1 + exp(lambda / 2))`` (Liu et al. 2023, eq. 1).

    >>> import torch
    >>> from diffusion_schemes_flow_matching import VelocityWeighting
    >>> float(VelocityWeighting()(torch.tensor(0.0)))   # t = 1/2
    4.0
    """

    loss_type = "x0"
    spec_class = VelocityWeightingSpec

    def weight(self, log_snr: torch.Tensor, schedule: Any = None) -> torch.Tensor:
        return (1 + torch.exp(log_snr / 2)) ** 2
