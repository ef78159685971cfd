"""``dpm_adaptive``: DPM-Solver-12 / -23 with error-controlled step size (Lu et al. 2022a, Sec. 3.3, Alg. 4).

The grid only gives the interval: the solver integrates the probability-flow ODE in
``lambda = -log sigma`` from ``sigmas[0]`` to the smallest positive ``sigmas[-2]``, choosing its
own steps, then takes the denoised estimate there (one more evaluation) to reach 0. Each
attempted step computes a lower- and a higher-order solution from shared evaluations
(DPM-Solver-1 and -2 for ``order=2``, DPM-Solver-2 with ``r1 = 1/3`` and DPM-Solver-3 for
``order=3``); the scaled error ``E = ||(x_high - x_low) / delta||_2 / sqrt(numel)`` with
``delta = max(atol, rtol max(|x_low|, |x_prev|))`` accepts the step when ``E <= 1`` and sets the
next ``h <- h min(1.5, theta E^(-1/order))``. ``nfe`` is the number of evaluations made. An error
estimate that is not finite (NaN or inf in the state or the model's output) ends the run with
that state, which ``ds.sample`` then reports, instead of shrinking the step forever.

>>> import torch
>>> import diffusion_schemes as ds
>>> schedule = ds.create("noise_schedule", "edm")
>>> x0_predictor = lambda x, t: torch.full_like(x, 0.25)      # a dataset holding one point
>>> latents = schedule.init_latents((3, 2), generator=torch.Generator().manual_seed(0))
>>> result = ds.sample(x0_predictor, latents, schedule, 10, solver="dpm_adaptive")
>>> bool(torch.allclose(result.samples, torch.full_like(latents, 0.25))), result.nfe   # 12 steps of 3, then D
(True, 37)
"""

import math
from typing import Literal

import torch
from pydantic import Field

from diffusion_schemes.solvers.base import BaseSolver, StepLevels, as_stored
from diffusion_schemes.specs.base import SolverSpec
from diffusion_schemes.tensors import cast

__all__ = ["DPMAdaptive"]

#: Largest factor by which one step may grow the next (Hairer, Norsett & Wanner 1993, II.4, eq. 4.13: 1.5 to 5).
MAX_GROWTH = 1.5


class DPMAdaptiveSpec(SolverSpec):
    """DPM-Solver-12/23 with adaptive step size (Lu et al. 2022a); nfe is what it spent.

    >>> import diffusion_schemes as ds
    >>> ds.create("solver", {"name": "dpm_adaptive", "rtol": 0.01})
    DPMAdaptive(order=3, rtol=0.01, atol=0.0078, h_init=0.05, theta=0.9)
    """

    name: Literal["dpm_adaptive"] = "dpm_adaptive"
    order: Literal[2, 3] = Field(3, description="3: DPM-Solver-23 (3 evaluations a step); 2: DPM-Solver-12 (2).")
    rtol: float = Field(0.05, gt=0, description="Relative tolerance of the local error.")
    atol: float = Field(0.0078, gt=0, description="Absolute tolerance of the local error (data scale).")
    h_init: float = Field(0.05, gt=0, description="First step size in lambda = -log sigma.")
    theta: float = Field(0.9, gt=0, lt=1, description="Safety factor of the step-size update.")
    builds = "DPMAdaptive"


class DPMAdaptive(BaseSolver):
    """Adaptive DPM-Solver in the unscaled latent (``alpha = 1``, ``eps = (x - D) / sigma``), ``lambda = -log sigma``.

    With ``h = lambda_t - lambda_s``: DPM-Solver-1 ``x - sigma_t (e^h - 1) eps_s``; DPM-Solver-2
    ``u = x - sigma_{s1} (e^{r1 h} - 1) eps_s``, ``x_t = x - sigma_t (e^h - 1) eps_s - sigma_t / (2 r1)
    (e^h - 1)(eps_{s1} - eps_s)``; DPM-Solver-3 (``r1 = 1/3``, ``r2 = 2/3``) as in Lu et al. 2022a,
    Algorithm 2. ``order`` is the order of the higher solution.
    """

    spec_class = DPMAdaptiveSpec
    adaptive = True
    levels_from_grid = True

    def solve(self, denoiser, x, sigmas, noise_sampler, callback=None):
        """The step-size loop. ``lambda`` and the step size live on the host (Python floats, from the grid's
        two ends read once per call), so the one value an attempted step reads from the device is its error
        estimate, which decides whether to accept the step, the next step size and when to stop: a loop that
        chooses its own steps cannot do without it. Each evaluation's noise level is filled in on the device
        from its host value (no copy)."""
        nfe = 0
        enter = getattr(denoiser, "enter_step", None)
        first, end = sigmas[0], sigmas[-2]
        sigma_first, sigma_end = torch.stack([first, end]).tolist()
        level = lambda lam: sigmas.new_full((), math.exp(-lam))  # noqa: E731

        def eps(x, lam):
            nonlocal nfe
            nfe += 1
            sigma = level(lam)
            if enter is not None:  # the level is made here from a host value: the denoiser may know it exactly
                enter(StepLevels(((sigma, as_stored(math.exp(-lam), sigmas.dtype)),), None, sigmas.dtype))
            return (x - denoiser.x0_sigma(x, sigma)) / math.exp(-lam)

        def report(i, lam, lam_t, x_next, eps_s):
            if callback is not None:
                sigma_s = level(lam)
                denoised = x - cast(sigma_s, x.dtype) * eps_s
                callback({"i": i, "sigma": sigma_s, "sigma_next": level(lam_t), "x": x_next, "denoised": denoised})

        lam, lam_end = -math.log(sigma_first), -math.log(sigma_end)
        h, x_prev, eps_s, i = self.h_init, x, None, 0
        while lam_end - lam > 0:
            lam_t = min(lam + h, lam_end)
            eps_s = eps(x, lam) if eps_s is None else eps_s
            x_low, x_high = self._pair(eps, x, lam, lam_t, eps_s)
            delta = (self.rtol * torch.maximum(x_low.abs(), x_prev.abs())).clamp(min=self.atol)
            error = float(torch.linalg.vector_norm((x_high - x_low) / delta)) / math.sqrt(x.numel())  # the read
            if not math.isfinite(error):  # NaN or inf in the state or the model's output: no step size helps
                report(i, lam, lam_t, x_high, eps_s)
                return x_high, nfe
            h = (lam_t - lam) * min(MAX_GROWTH, self.theta * max(error, 1e-10) ** (-1 / self.order))
            if error <= 1:
                report(i, lam, lam_t, x_high, eps_s)
                x_prev, x, lam, eps_s, i = x_low, x_high, lam_t, None, i + 1
        if enter is not None:
            enter(StepLevels(((end, sigma_end),), None, sigmas.dtype))
        denoised = denoiser.x0_sigma(x, end)
        if callback is not None:
            callback({"i": i, "sigma": end, "sigma_next": sigmas[-1], "x": denoised, "denoised": denoised})
        return denoised, nfe + 1

    def _pair(self, eps, x, lam, lam_t, eps_s):
        """``(x_low, x_high)`` from ``lam`` to ``lam_t`` (host floats): DPM-Solver-(k-1) and -k sharing evaluations.

        Every coefficient is a product of host floats, so each term costs one operation on the latent.
        """
        h = lam_t - lam
        sigma = lambda v: math.exp(-v)  # noqa: E731
        first = x - (sigma(lam_t) * math.expm1(h)) * eps_s
        if self.order == 2:
            s1 = lam + h / 2
            u1 = x - (sigma(s1) * math.expm1(h / 2)) * eps_s
            second = first - (sigma(lam_t) * math.expm1(h)) * (eps(u1, s1) - eps_s)
            return first, second
        r1, r2 = 1 / 3, 2 / 3
        s1, s2 = lam + r1 * h, lam + r2 * h
        u1 = x - (sigma(s1) * math.expm1(r1 * h)) * eps_s
        d1 = eps(u1, s1) - eps_s
        second = first - (sigma(lam_t) / (2 * r1) * math.expm1(h)) * d1
        phi = math.expm1(r2 * h) / (r2 * h) - 1
        u2 = x - (sigma(s2) * math.expm1(r2 * h)) * eps_s - (sigma(s2) * (r2 / r1) * phi) * d1
        d2 = eps(u2, s2) - eps_s
        third = first - (sigma(lam_t) / r2 * (math.expm1(h) / h - 1)) * d2
        return second, third
