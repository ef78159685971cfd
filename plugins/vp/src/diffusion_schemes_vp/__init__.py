"""VP: the variance-preserving scheme of Song et al. 2021, in the form of Karras et al. 2022, Table 1.

The preconditioner and the noise schedule, by name; both use the time ``t`` in ``(0, 1]`` with
``sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)``:

>>> import torch
>>> import diffusion_schemes as ds
>>> backbone = lambda x, c_noise, condition=None: torch.zeros_like(x)
>>> precond = ds.create("preconditioner", "vp", model=backbone)
>>> schedule = ds.create("noise_schedule", {"name": "vp", "weighting": "likelihood_weighting"})
>>> schedule.spec.weighting, schedule.spec.epsilon_t, schedule.spec.epsilon_s
('likelihood_weighting', 1e-05, 0.001)

This module only declares the specs; building one imports its implementation.
"""

from typing import Literal

from pydantic import Field

import diffusion_schemes as ds
from diffusion_schemes.lazy import lazy_exports

__all__ = ["VPNoiseSchedule", "VPNoiseScheduleSpec", "VPPreconditioner", "VPPreconditionerSpec", "VPTime"]

_BETA_D = Field(19.9, gt=0, description="Extent of the noise schedule: beta(t) = beta_min + beta_d t.")
_BETA_MIN = Field(0.1, ge=0, description="Initial slope of the noise schedule, beta(0).")


class VPPreconditionerSpec(ds.PreconditionerSpec):
    """VP preconditioner (Karras et al. 2022, Table 1): c_in = 1/sqrt(sigma^2+1), c_noise = (M-1) t.

    >>> import torch
    >>> from diffusion_schemes_vp import VPPreconditionerSpec
    >>> VPPreconditionerSpec(M=500).build(model=torch.nn.Identity()).M
    500
    """

    name: Literal["vp"] = "vp"
    builds = "VPPreconditioner"
    beta_d: float = _BETA_D
    beta_min: float = _BETA_MIN
    M: int = Field(1000, ge=1, description="Number of DDPM steps; c_noise = (M - 1) t.")


class VPNoiseScheduleSpec(ds.NoiseScheduleSpec):
    """VP schedule: t in [eps, 1], uniform steps and uniform training (Karras et al. 2022).

    >>> from diffusion_schemes_vp import VPNoiseScheduleSpec
    >>> VPNoiseScheduleSpec(epsilon_s=0.01).build().domain()
    (0.01, 1.0)
    """

    name: Literal["vp"] = "vp"
    builds = "VPNoiseSchedule"
    beta_d: float = _BETA_D
    beta_min: float = _BETA_MIN
    epsilon_t: float = Field(1e-5, gt=0, lt=1, description="Lowest training time: t ~ U(epsilon_t, 1).")
    epsilon_s: float = Field(1e-3, gt=0, lt=1, description="Last sampling time before 0.")
    weighting: ds.WeightingRef = Field(
        "default", description="Loss weighting: 'default' (1/sigma^2 on x0), None, a name or a config."
    )


@ds.hookimpl
def register_schemes() -> list[type[ds.SchemeSpec]]:
    return [VPPreconditionerSpec, VPNoiseScheduleSpec]


_LAZY = {"VPPreconditioner": "._preconditioner", "VPNoiseSchedule": "._schedule", "VPTime": "._time"}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
