"""Noise schedules: diffusion time and what follows from the log-SNR ``lambda(t)``.

:class:`BaseNoiseSchedule` holds the log-SNR contract (noise level ``sigma/alpha = exp(-lambda/2)``,
``alpha``, ``sigma``, the SDE's drift and diffusion, training-time sampling, the sampling grid, the
loss weight) and ``validate``, whose checks live in ``checks``. A scheme derives from
:class:`SigmaTimeSchedule` (time is the noise level: EDM, VE, iDDPM), :class:`UniformTimeSchedule`
(uniform training times and even sampling steps: VP, cosine, flow matching) or the base, and
states ``lambda(t)``, its inverse and the domains.
"""

from __future__ import annotations

from diffusion_schemes.schedules.base import VARIANCE_TYPES, BaseNoiseSchedule
from diffusion_schemes.schedules.sigma_time import SigmaTimeSchedule
from diffusion_schemes.schedules.uniform_time import UniformTimeSchedule

__all__ = ["VARIANCE_TYPES", "BaseNoiseSchedule", "SigmaTimeSchedule", "UniformTimeSchedule"]
