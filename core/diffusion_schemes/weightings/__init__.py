"""Loss weightings: how much each noise level counts in the denoising loss.

:class:`BaseWeighting` states a weight as a function of log-SNR for one loss type; ``weight_for``
is the one entry point that turns any weighting into the weight for a given prediction type
(the loss, schedules, ``plot`` and the trainer all go through it), and ``convert_weight`` moves a
weight between loss types. The built-in ``snr`` and ``likelihood_weighting`` live here, registered
through this package's ``register_schemes`` hook, with EDM2's learned uncertainty weighting
(:class:`UncertaintyWeight`, behind ``MSEDSMLoss(..., uncertainty=True)``).
"""

from __future__ import annotations

from diffusion_schemes.specs.hooks import hookimpl
from diffusion_schemes.weightings.base import (
    LOSS_TYPES,
    BaseWeighting,
    LikelihoodWeighting,
    LikelihoodWeightingSpec,
    SNRWeighting,
    SNRWeightingSpec,
    convert_weight,
    weight_for,
)
from diffusion_schemes.weightings.uncertainty import UncertaintyWeight, resolve_uncertainty

__all__ = [
    "LOSS_TYPES",
    "BaseWeighting",
    "LikelihoodWeighting",
    "LikelihoodWeightingSpec",
    "SNRWeighting",
    "SNRWeightingSpec",
    "UncertaintyWeight",
    "convert_weight",
    "resolve_uncertainty",
    "weight_for",
]


@hookimpl
def register_schemes():
    return [SNRWeightingSpec, LikelihoodWeightingSpec]
