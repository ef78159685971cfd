"""The shifted cosine noise schedule, as a third party would publish it.

``lambda(t) = -2 log tan(pi t / 2) + 2 shift`` (Nichol & Dhariwal 2021's cosine schedule in
log-SNR form; the shift of Hoogeboom et al. 2023 and Kingma & Gao 2023, appendix D.1),
variance preserving, with lambda clipped to ``[log_snr_min, log_snr_max]`` by restricting the
time to the interval where it falls there.

>>> import diffusion_schemes as ds
>>> schedule = ds.create("noise_schedule", {"name": "cosine", "shift": 1.0})
>>> schedule.spec
CosineNoiseScheduleSpec(name='cosine', shift=1.0, log_snr_min=-15.0, log_snr_max=15.0, weighting='default')

This module only declares the spec; building the schedule imports its implementation.
"""

from typing import Literal

from pydantic import Field

import diffusion_schemes as ds
from diffusion_schemes.lazy import lazy_exports

__all__ = ["CosineNoiseSchedule", "CosineNoiseScheduleSpec"]


class CosineNoiseScheduleSpec(ds.NoiseScheduleSpec):
    """Shifted cosine schedule: lambda = -2 log tan(pi t/2) + 2 shift, clipped (Kingma & Gao 2023)."""

    name: Literal["cosine"] = "cosine"
    builds = "CosineNoiseSchedule"
    ordered = (("log_snr_min", "log_snr_max"),)
    shift: float = Field(
        0.0, description="Shift of lambda (2*shift is added); log(64/d) for resolution d in simple diffusion."
    )
    log_snr_min: float = Field(-15.0, description="Lowest log-SNR (at the largest time).")
    log_snr_max: float = Field(15.0, description="Highest log-SNR (at the smallest time).")
    weighting: ds.WeightingRef = Field("default", description="Loss weighting: 'default', None, a name or a config.")


@ds.hookimpl
def register_schemes() -> list[type[ds.SchemeSpec]]:
    return [CosineNoiseScheduleSpec]


__getattr__, __dir__ = lazy_exports(__name__, {"CosineNoiseSchedule": "._schedule"})
