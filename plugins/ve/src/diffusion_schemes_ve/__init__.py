"""VE: the variance-exploding scheme of Song et al. 2021, in the form of Karras et al. 2022, Table 1.

The preconditioner and the noise schedule, by name; the diffusion time is the noise level:

>>> import torch
>>> import diffusion_schemes as ds
>>> backbone = lambda x, c_noise, condition=None: torch.zeros_like(x)
>>> precond = ds.create("preconditioner", "ve", model=backbone)
>>> schedule = ds.create("noise_schedule", {"name": "ve", "sigma_max": 50.0})
>>> schedule.spec
VENoiseScheduleSpec(name='ve', sigma_min=0.02, sigma_max=50.0, weighting='default')

This module only declares the specs; building one imports its implementation.
"""

from typing import Literal

from pydantic import Field

import diffusion_schemes as ds
from diffusion_schemes.lazy import lazy_exports

__all__ = ["VENoiseSchedule", "VENoiseScheduleSpec", "VEPreconditioner", "VEPreconditionerSpec"]


class VEPreconditionerSpec(ds.PreconditionerSpec):
    """VE preconditioner (Karras et al. 2022, Table 1): c_skip 1, c_out sigma, c_noise ln(sigma/2).

    >>> import torch
    >>> from diffusion_schemes_ve import VEPreconditionerSpec
    >>> type(VEPreconditionerSpec().build(model=torch.nn.Identity())).__name__
    'VEPreconditioner'
    """

    name: Literal["ve"] = "ve"
    builds = "VEPreconditioner"


class VENoiseScheduleSpec(ds.NoiseScheduleSpec):
    """VE schedule: t = sigma, geometric sampling steps, log-uniform training (Karras et al. 2022).

    >>> from diffusion_schemes_ve import VENoiseScheduleSpec
    >>> VENoiseScheduleSpec(sigma_max=50).build().domain()
    (0.02, 50.0)
    """

    name: Literal["ve"] = "ve"
    builds = "VENoiseSchedule"
    ordered = (("sigma_min", "sigma_max"),)
    sigma_min: float = Field(0.02, gt=0, description="Lowest noise level (sampling and training).")
    sigma_max: float = Field(100.0, gt=0, description="Highest noise level (sampling and training).")
    weighting: ds.WeightingRef = Field(
        "default", description="Loss weighting: 'default' (1/sigma^2 on x0), None, a name or a config."
    )


@ds.hookimpl
def register_schemes() -> list[type[ds.SchemeSpec]]:
    return [VEPreconditionerSpec, VENoiseScheduleSpec]


_LAZY = {"VEPreconditioner": "._preconditioner", "VENoiseSchedule": "._schedule"}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
