"""Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023), as a third party would publish it.

The forward process ``z_t = (1 - t) x0 + t eps`` neither preserves nor explodes variance;
in log-SNR terms ``lambda(t) = 2 log((1 - t) / t)``, ``alpha = sigmoid(lambda / 2)``,
``sigma = sigmoid(-lambda / 2)`` and the noise level ``sigma / alpha = t / (1 - t)``.
The network predicts the velocity ``v = dz/dt = eps - x0``.

>>> import torch
>>> import diffusion_schemes as ds
>>> schedule = ds.create("noise_schedule", "flow_matching")
>>> alpha, sigma = schedule.get_alpha_sigma(schedule.get_log_snr(torch.tensor(0.25)))
>>> round(float(alpha), 6), round(float(sigma), 6)
(0.75, 0.25)

This module only declares the specs; building one imports its implementation.
"""

from typing import Literal

from pydantic import Field

import diffusion_schemes as ds
from diffusion_schemes.lazy import lazy_exports

__all__ = [
    "FlowMatchingNoiseSchedule", "FlowMatchingNoiseScheduleSpec", "FlowMatchingPreconditioner",
    "FlowMatchingPreconditionerSpec", "VelocityWeighting", "VelocityWeightingSpec",
]


class FlowMatchingNoiseScheduleSpec(ds.NoiseScheduleSpec):
    """Rectified flow: alpha = 1 - t, sigma = t, uniform t for training and sampling (Liu et al. 2023)."""

    name: Literal["flow_matching"] = "flow_matching"
    builds = "FlowMatchingNoiseSchedule"
    ordered = (("t_min", "t_max"),)
    t_min: float = Field(1e-3, gt=0, lt=1, description="Smallest time (highest log-SNR) for training and sampling.")
    t_max: float = Field(0.999, gt=0, lt=1, description="Largest time (lowest log-SNR); 1 would be pure noise.")
    weighting: ds.WeightingRef = Field(
        "default", description="Loss weighting: 'default' (uniform on the velocity), None, a name or a config."
    )


class FlowMatchingPreconditionerSpec(ds.PreconditionerSpec):
    """Velocity-predicting network as an x0-predictor: D = (1 - t) x - t F((1 - t) x, t)."""

    name: Literal["flow_matching"] = "flow_matching"
    builds = "FlowMatchingPreconditioner"


class VelocityWeightingSpec(ds.WeightingSpec):
    """Uniform weight on the flow-matching velocity loss: (1 + exp(lambda/2))^2 on the x0-loss."""

    name: Literal["flow_matching_velocity"] = "flow_matching_velocity"
    builds = "VelocityWeighting"


@ds.hookimpl
def register_schemes() -> list[type[ds.SchemeSpec]]:
    return [FlowMatchingNoiseScheduleSpec, FlowMatchingPreconditionerSpec, VelocityWeightingSpec]


_LAZY = {
    "FlowMatchingNoiseSchedule": "._schedule",
    "FlowMatchingPreconditioner": "._preconditioner",
    "VelocityWeighting": "._weighting",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
