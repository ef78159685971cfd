"""Sigmoid loss weighting: Kingma & Gao 2023 ("Understanding Diffusion Objectives as the ELBO ...")."""

from __future__ import annotations

from typing import Any

import torch

import diffusion_schemes as ds

from . import SigmoidWeightingSpec


class SigmoidWeighting(ds.BaseWeighting):
    """``w(lambda) = sigmoid(bias - lambda)`` on the epsilon-loss (Kingma & Gao 2023, sec. 5).

    Monotone in lambda (decreasing), so by Kingma & Gao's result the weighted loss is an ELBO
    under Gaussian data augmentation. On the x0-loss the same objective weighs
    ``sigmoid(bias - lambda) exp(lambda)`` (see :func:`diffusion_schemes.convert_weight`).

    >>> import torch
    >>> from diffusion_schemes_sigmoid import SigmoidWeighting
    >>> w = SigmoidWeighting(bias=2.0)
    >>> w(torch.tensor([2.0]))                      # sigmoid(0)
    tensor([0.5000])
    >>> w.convert(torch.tensor([0.0]), "x0")        # sigmoid(2) * exp(0)
    tensor([0.8808])
    """

    loss_type = "epsilon"
    spec_class = SigmoidWeightingSpec

    def weight(self, log_snr: torch.Tensor, schedule: Any = None) -> torch.Tensor:
        return torch.sigmoid(self.bias - log_snr)
