"""The pipeline: from a network to a denoiser, a loss and samples.

``denoiser`` turns a preconditioner or a predictor (``x0``, ``epsilon``, ``v``, ``score``) into
``D(x; sigma)`` and the ODE/SDE right-hand side (:class:`Denoiser`); ``guidance`` combines
conditional and null (or guide) estimates (:class:`Guidance`), ``posterior`` conditions on a
measurement ``y = A(x) + noise`` (:class:`Posterior`: DPS, PiGDM), ``patched`` evaluates a network on
overlapping patches of a larger latent (:class:`Patched`); ``sampler`` runs a solver over a
grid (:func:`sample`, :class:`SampleResult`, the inpainting step hook); ``likelihood`` gives the exact
log-density of data through the probability-flow ODE (:func:`log_likelihood`); ``calibrate`` fits a
grid of noise levels to a model and a solver (:func:`calibrate_sigmas`); ``loss`` is the denoising
score-matching loss (:class:`MSEDSMLoss`); ``compose`` checks the pieces agree when they meet.
Imported on first use: ``import diffusion_schemes`` does not load it.
"""

from __future__ import annotations

from diffusion_schemes.sampling.calibrate import CalibratedGrid, calibrate_sigmas
from diffusion_schemes.sampling.compose import check_prediction_type, check_shared_parameters
from diffusion_schemes.sampling.denoiser import DENOISING_TYPES, Denoiser, make_denoiser
from diffusion_schemes.sampling.guidance import Guidance, GuidedDenoiser
from diffusion_schemes.sampling.likelihood import LikelihoodResult, log_likelihood
from diffusion_schemes.sampling.loss import PREDICTION_TYPES, REDUCTIONS, MSEDSMLoss
from diffusion_schemes.sampling.patched import Patched
from diffusion_schemes.sampling.posterior import Posterior
from diffusion_schemes.sampling.sampler import SampleResult, StepHook, sample

__all__ = [
    "DENOISING_TYPES",
    "CalibratedGrid",
    "PREDICTION_TYPES",
    "REDUCTIONS",
    "Denoiser",
    "Guidance",
    "GuidedDenoiser",
    "LikelihoodResult",
    "MSEDSMLoss",
    "Patched",
    "Posterior",
    "SampleResult",
    "StepHook",
    "calibrate_sigmas",
    "check_prediction_type",
    "check_shared_parameters",
    "log_likelihood",
    "make_denoiser",
    "sample",
]
