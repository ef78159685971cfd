"""iDDPM: the improved DDPM of Nichol & Dhariwal 2021, in the form of Karras et al. 2022, Table 1.

The preconditioner and the noise schedule, by name; the diffusion time is the noise level and
the noise levels come from the table ``u_0 > ... > u_M = 0`` of the cosine schedule:

>>> import torch
>>> import diffusion_schemes as ds
>>> backbone = lambda x, c_noise, condition=None: torch.zeros_like(x)
>>> precond = ds.create("preconditioner", "iddpm", model=backbone)
>>> schedule = ds.create("noise_schedule", {"name": "iddpm", "j0": 8})
>>> schedule.spec
IDDPMNoiseScheduleSpec(name='iddpm', C_1=0.001, C_2=0.008, M=1000, j0=8, weighting='default')

This module only declares the specs; building one imports its implementation.
"""

from typing import Literal

from pydantic import Field, model_validator

import diffusion_schemes as ds
from diffusion_schemes.lazy import lazy_exports

__all__ = [
    "IDDPMNoiseSchedule", "IDDPMNoiseScheduleSpec", "IDDPMPreconditioner",
    "IDDPMPreconditionerSpec", "noise_level_table",
]

_C_1 = Field(0.001, gt=0, le=1, description="Lowest ratio alpha_bar(j-1)/alpha_bar(j) (clips the table at low j).")
_C_2 = Field(0.008, ge=0, le=1, description="Offset of the cosine schedule (Nichol & Dhariwal 2021, eq. 17), small against 1.")
_M = Field(1000, ge=2, le=100_000, description="Number of DDPM steps; the table holds u_0 ... u_M.")


class IDDPMPreconditionerSpec(ds.PreconditionerSpec):
    """iDDPM preconditioner (Karras et al. 2022, Table 1): c_noise = M - 1 - argmin_j |sigma - u_j|.

    >>> import torch
    >>> from diffusion_schemes_iddpm import IDDPMPreconditionerSpec
    >>> IDDPMPreconditionerSpec(M=100).build(model=torch.nn.Identity()).u.shape
    torch.Size([101])
    """

    name: Literal["iddpm"] = "iddpm"
    builds = "IDDPMPreconditioner"
    C_1: float = _C_1
    C_2: float = _C_2
    M: int = _M


class IDDPMNoiseScheduleSpec(ds.NoiseScheduleSpec):
    """iDDPM schedule: t = sigma on the u_j table, uniform j in training (Karras et al. 2022).

    >>> from diffusion_schemes_iddpm import IDDPMNoiseScheduleSpec
    >>> IDDPMNoiseScheduleSpec(j0=0).build().timesteps(2)[0] == IDDPMNoiseScheduleSpec().build().u[0]
    tensor(True)
    """

    name: Literal["iddpm"] = "iddpm"
    builds = "IDDPMNoiseSchedule"
    C_1: float = _C_1
    C_2: float = _C_2
    M: int = _M
    j0: int = Field(8, ge=0, description="First table index used by the sampling steps.")
    weighting: ds.WeightingRef = Field(
        "default", description="Loss weighting: 'default' (1/sigma^2 on x0), None, a name or a config."
    )

    @model_validator(mode="after")
    def _j0_below_m(self) -> "IDDPMNoiseScheduleSpec":
        if not self.j0 < self.M - 1:
            raise ValueError(f"j0 ({self.j0}) must be below M - 1 ({self.M - 1})")
        return self


@ds.hookimpl
def register_schemes() -> list[type[ds.SchemeSpec]]:
    return [IDDPMPreconditionerSpec, IDDPMNoiseScheduleSpec]


_LAZY = {"IDDPMPreconditioner": "._preconditioner", "IDDPMNoiseSchedule": "._schedule", "noise_level_table": "._table"}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
