"""EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models").

The preconditioner, noise schedule and loss weighting of Table 1's EDM column, by name:

>>> import torch
>>> import diffusion_schemes as ds
>>> backbone = lambda x, c_noise, condition=None: torch.zeros_like(x)
>>> precond = ds.create("preconditioner", {"name": "edm", "sigma_data": 0.5}, model=backbone)
>>> precond.spec
EDMPreconditionerSpec(name='edm', sigma_data=0.5)

This module only declares the specs; building one imports its implementation.
"""

from typing import Literal

from pydantic import Field

import diffusion_schemes as ds
from diffusion_schemes.lazy import lazy_exports

__all__ = [
    "EDMNoiseSchedule", "EDMNoiseScheduleSpec", "EDMPreconditioner",
    "EDMPreconditionerSpec", "EDMWeighting", "EDMWeightingSpec",
]

_SIGMA_DATA = Field(0.5, gt=0, description="Standard deviation of the training data.")


class EDMPreconditionerSpec(ds.PreconditionerSpec):
    """EDM preconditioner (Karras et al. 2022, Table 1): unit-variance input and target."""

    name: Literal["edm"] = "edm"
    builds = "EDMPreconditioner"
    sigma_data: float = _SIGMA_DATA
    shared_parameters = ("sigma_data",)  # one sigma_data across the EDM family


class EDMNoiseScheduleSpec(ds.NoiseScheduleSpec):
    """EDM schedule: t = sigma, rho-ramp sampling, log-normal training (Karras et al. 2022)."""

    name: Literal["edm"] = "edm"
    builds = "EDMNoiseSchedule"
    ordered = (("sigma_min", "sigma_max"),)
    sigma_min: float = Field(0.002, gt=0, description="Lowest sampling noise level.")
    sigma_max: float = Field(80.0, gt=0, description="Highest sampling noise level.")
    rho: float = Field(7.0, gt=0, description="Curvature of the sampling ramp (eq. 5).")
    sigma_data: float = _SIGMA_DATA
    shared_parameters = ("sigma_data",)  # one sigma_data across the EDM family
    P_mean: float = Field(-1.2, description="Mean of ln(sigma) during training.")
    P_std: float = Field(1.2, gt=0, description="Standard deviation of ln(sigma) during training.")
    weighting: ds.WeightingRef = Field("default", description="Loss weighting: 'default' (EDM's), None, a name or a config.")


class EDMWeightingSpec(ds.WeightingSpec):
    """EDM loss weight (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 on the x0-loss."""

    name: Literal["edm"] = "edm"
    builds = "EDMWeighting"
    sigma_data: float = _SIGMA_DATA
    shared_parameters = ("sigma_data",)  # one sigma_data across the EDM family


@ds.hookimpl
def register_schemes() -> list[type[ds.SchemeSpec]]:
    return [EDMPreconditionerSpec, EDMNoiseScheduleSpec, EDMWeightingSpec]


_LAZY = {"EDMPreconditioner": "._preconditioner", "EDMNoiseSchedule": "._schedule", "EDMWeighting": "._weighting"}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
