"""Sigmoid loss weighting: Kingma & Gao 2023 ("Understanding Diffusion Objectives as the ELBO ...")."""

from __future__ import annotations

import math
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

    def __init__(self, bias: float = 2.0) -> None:
        if not math.isfinite(bias):
            raise ValueError(f"bias must be a finite number, got {bias!r}")
        self.bias = float(bias)

    def weight(self, log_snr: torch.Tensor, schedule: Any = None) -> torch.Tensor:
        return torch.sigmoid(self.bias - log_snr)

    def get_config(self) -> dict[str, Any]:
        return {"bias": self.bias}
