"""Single-step solvers with a midpoint evaluation, and their ancestral (noise-adding) forms.

Ancestral sampling splits the step from ``sigma`` to ``sigma_next`` into a deterministic step down
to ``sigma_down`` and fresh noise of scale ``sigma_up`` (:func:`~diffusion_schemes.solvers.base.ancestral_step`),
so that the marginal noise level at ``sigma_next`` is kept. The names, defaults (``eta = 1``,
``s_noise = 1``) and noise calls (one ``noise_sampler(sigma, sigma_next)`` per step, none on
the step to 0) follow k-diffusion, so that the same grid, denoiser and noise give its samples.

>>> import torch
>>> import diffusion_schemes as ds
>>> schedule = ds.create("noise_schedule", "edm")
>>> x0_predictor = lambda x, t: torch.full_like(x, 0.25)      # a dataset holding one point
>>> latents = schedule.init_latents((3, 2), generator=torch.Generator().manual_seed(0))
>>> for name in ("euler_ancestral", "dpm_2", "dpm_2_ancestral", "dpmpp_2s_ancestral"):
...     result = ds.sample(x0_predictor, latents, schedule, 5, solver=name, generator=torch.Generator().manual_seed(1))
...     print(name, result.nfe, bool(torch.allclose(result.samples, torch.full_like(latents, 0.25))))
euler_ancestral 5 True
dpm_2 9 True
dpm_2_ancestral 9 True
dpmpp_2s_ancestral 9 True
"""

import math
from typing import Literal

import torch
from pydantic import Field

from diffusion_schemes.solvers.base import BaseSolver, _euler, ancestral_step
from diffusion_schemes.tensors import cast
from diffusion_schemes.specs.base import SolverSpec

__all__ = ["DPM2", "DPM2Ancestral", "DPMpp2SAncestral", "EulerAncestral"]


class _AncestralSpec(SolverSpec):
    eta: float = Field(1.0, ge=0, le=1, description="Scale of the fresh noise: 1 is ancestral (DDPM), 0 the ODE.")
    s_noise: float = Field(1.0, gt=0, description="Multiplier of the noise drawn.")


def _dpm_2(denoiser, x, sigma, sigma_next, denoised):
    """DPM-Solver-2 in sigma: an Euler half step in ``log sigma``, then the full step with its slope.

    ``x_mid = x + (sigma_mid - sigma) (x - D) / sigma = D + (sigma_mid / sigma) (x - D)`` (one ``lerp``), then
    ``x + (sigma_next - sigma) v / sigma_mid`` with ``v = x_mid - D(x_mid; sigma_mid)``: three operations on the
    latent. Returns a new tensor (the step's own).
    """
    sigma_mid = ((sigma.log() + sigma_next.log()) / 2).exp()
    x_mid = torch.lerp(denoised, x, cast(sigma_mid / sigma, x.dtype))
    v = x_mid - denoiser.x0_sigma(x_mid, sigma_mid)
    return torch.addcmul(x, v, cast((sigma_next - sigma) / sigma_mid, x.dtype))


def _dpmpp_2s(denoiser, x, sigma, sigma_next, denoised):
    """DPM-Solver++(2S) with ``r = 1/2`` in ``lambda = -log sigma`` (Lu et al. 2022b, Algorithm 1).

    Each stage ``(s / sigma) x - (s / sigma - 1) D`` is ``D + (s / sigma) (x - D)``: one ``lerp`` on the latent.
    Returns a new tensor (the step's own).
    """
    sigma_mid = (sigma * sigma_next).sqrt()
    x_mid = torch.lerp(denoised, x, cast(sigma_mid / sigma, x.dtype))
    denoised_mid = denoiser.x0_sigma(x_mid, sigma_mid)
    return torch.lerp(denoised_mid, x, cast(sigma_next / sigma, x.dtype))


class EulerAncestralSpec(_AncestralSpec):
    """Ancestral sampling with Euler steps (k-diffusion's euler_ancestral; DDPM for eta = 1).

    >>> import diffusion_schemes as ds
    >>> ds.create("solver", {"name": "euler_ancestral", "eta": 0.5})
    EulerAncestral(eta=0.5, s_noise=1.0)
    """

    name: Literal["euler_ancestral"] = "euler_ancestral"
    builds = "EulerAncestral"


class EulerAncestral(BaseSolver):
    """``x <- x + (sigma_down - sigma) d + s_noise sigma_up eps``: N evaluations."""

    stochastic = True
    spec_class = EulerAncestralSpec
    levels_from_grid = True

    def step(self, denoiser, x, sigma, sigma_next, state=None, noise=None, last=False):
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, self.eta)
        x, denoised = _euler(denoiser, x, sigma, sigma_down)
        if noise is not None:  # in place on the step's own new tensor
            x = x.addcmul_(noise, cast(self.s_noise * sigma_up, x.dtype))
        return x, denoised, state


class DPM2Spec(SolverSpec):
    """DPM-Solver-2 in the noise level: midpoint in log sigma (k-diffusion's dpm_2; Lu et al. 2022a).

    >>> import diffusion_schemes as ds
    >>> ds.create("solver", "dpm_2").nfe(10)
    19
    """

    name: Literal["dpm_2"] = "dpm_2"
    builds = "DPM2"


class DPM2(BaseSolver):
    """``x_mid = x + (sigma_mid - sigma) d``, ``x <- x + (sigma_next - sigma) d(x_mid)``, ``sigma_mid = sqrt(sigma sigma_next)``.

    Euler on the last step: ``2N - 1`` evaluations.
    """

    order = 2
    evaluations = 2
    spec_class = DPM2Spec
    levels_from_grid = True

    def level_bounds(self, sigmas, i):
        """The midpoint ``sqrt(sigma_i sigma_{i+1})`` lies between the two."""
        return sigmas[i + 1], sigmas[i]

    def step(self, denoiser, x, sigma, sigma_next, state=None, noise=None, last=False):
        if last:
            return (*_euler(denoiser, x, sigma, sigma_next), state)
        denoised = denoiser.x0_sigma(x, sigma)
        return _dpm_2(denoiser, x, sigma, sigma_next, denoised), denoised, state


class DPM2AncestralSpec(_AncestralSpec):
    """Ancestral sampling with DPM-Solver-2 steps (k-diffusion's dpm_2_ancestral).

    >>> import diffusion_schemes as ds
    >>> ds.create("solver", "dpm_2_ancestral")
    DPM2Ancestral(eta=1.0, s_noise=1.0)
    """

    name: Literal["dpm_2_ancestral"] = "dpm_2_ancestral"
    builds = "DPM2Ancestral"


class _TwoStageAncestral(BaseSolver):
    """A two-evaluation step (``inner``) to ``sigma_down``, then noise of scale ``sigma_up``; Euler on the last.

    Its evaluations stay checked (``levels_from_grid`` False): where ``sigma_{i+1} / sigma_i`` is below about
    3e-4, ``sigma_down^2 = sigma_{i+1}^2 - sigma_up^2`` cancels to 0 in float32 and the midpoint with it.
    """

    stochastic = True
    evaluations = 2

    def level_bounds(self, sigmas, i):
        """The midpoint ``sqrt(sigma_i sigma_down)`` lies in ``[sqrt(sigma_i sigma_down), sigma_i]``; ``sigma_down``
        is bounded below allowing the device's cancellation in ``sigma_{i+1}^2 - sigma_up^2`` (1e-5 of
        ``sigma_{i+1}^2``, far above float32's rounding)."""
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        up = min(sigma_next, self.eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
        down_sq = max(0.0, sigma_next**2 - up**2 - 1e-5 * sigma_next**2)
        return math.sqrt(sigma * math.sqrt(down_sq)), sigma

    def step(self, denoiser, x, sigma, sigma_next, state=None, noise=None, last=False):
        if last:
            return (*_euler(denoiser, x, sigma, sigma_next), state)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, self.eta)
        denoised = denoiser.x0_sigma(x, sigma)
        x = type(self).inner(denoiser, x, sigma, sigma_down, denoised)  # a new tensor: the noise goes in in place
        return x.addcmul_(noise, cast(self.s_noise * sigma_up, x.dtype)), denoised, state


class DPM2Ancestral(_TwoStageAncestral):
    """A DPM-Solver-2 step to ``sigma_down``, then noise of scale ``sigma_up``: ``2N - 1`` evaluations."""

    spec_class = DPM2AncestralSpec
    inner = staticmethod(_dpm_2)


class DPMpp2SAncestralSpec(_AncestralSpec):
    """Ancestral sampling with DPM-Solver++(2S) steps (k-diffusion's dpmpp_2s_ancestral; Lu et al. 2022b).

    >>> import diffusion_schemes as ds
    >>> ds.create("solver", "dpmpp_2s_ancestral")
    DPMpp2SAncestral(eta=1.0, s_noise=1.0)
    """

    name: Literal["dpmpp_2s_ancestral"] = "dpmpp_2s_ancestral"
    builds = "DPMpp2SAncestral"


class DPMpp2SAncestral(_TwoStageAncestral):
    """A DPM-Solver++(2S) step to ``sigma_down``, then noise of scale ``sigma_up``: ``2N - 1`` evaluations.

    In ``lambda = -log sigma`` with data prediction and ``alpha = 1``: the midpoint
    ``x_mid = (s / sigma) x - (s / sigma - 1) D`` at ``s = sqrt(sigma sigma_down)``, then
    ``x <- (sigma_down / sigma) x - (sigma_down / sigma - 1) D(x_mid; s)``.
    """

    spec_class = DPMpp2SAncestralSpec
    inner = staticmethod(_dpmpp_2s)
