"""An exact oracle: an isotropic Gaussian mixture, whose noisy densities, scores and ideal denoisers
are known in closed form, in float64.

For data ``x0 ~ p(x) = sum_k pi_k N(mu_k, s_k^2 I)`` and ``x = x0 + sigma eps`` the noisy density is
again a mixture, ``p_sigma(x) = sum_k pi_k N(x; mu_k, (s_k^2 + sigma^2) I)``, so everything a
diffusion model learns is known exactly:

- the score ``grad log p_sigma(x) = sum_k r_k(x) (mu_k - x) / (s_k^2 + sigma^2)``, with the
  responsibilities ``r_k(x) = pi_k N_k(x) / p_sigma(x)``;
- the ideal denoiser, the posterior mean (Tweedie's formula ``D(x; sigma) = x + sigma^2 grad log
  p_sigma(x)``, Efron 2011 eq. 1.4), which for a mixture is the responsibility-weighted
  per-component posterior mean ``D(x; sigma) = sum_k r_k(x) [mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k)]``.

The probability-flow ODE driven by this denoiser carries ``p(.; sigma_max)`` onto the mixture, so
sampling with it measures a solver's error alone, and the gap between a trained model and it is
what training left undone. The tests, the benchmarks and the trainer's synthetic data sets all use
this one oracle; a plugin author can check a new solver or schedule against it the same way.

>>> import torch
>>> from diffusion_schemes.conformance.mixture import GaussianMixture
>>> gm = GaussianMixture(means=[[-1.0, 0.0], [1.0, 0.0]], stds=[0.1, 0.1])
>>> gm.sample(4, generator=torch.Generator().manual_seed(0)).shape
torch.Size([4, 2])
>>> gm.denoise(torch.tensor([[1.0, 0.0]]), sigma=1e-4)   # a mode is its own denoised value
tensor([[1., 0.]])
>>> x, sigma = torch.randn(3, 2, dtype=torch.float64), 0.7     # Tweedie: D = x + sigma^2 score
>>> torch.allclose(gm.denoise(x, sigma), x + sigma**2 * gm.score(x, sigma))
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from diffusion_schemes.errors import InvalidArgumentError

__all__ = ["ClassConditionalMixture", "ExactX0", "GaussianMixture", "OracleBackbone", "oracle_preconditioner"]


class GaussianMixture:
    """``sum_k weights[k] N(means[k], stds[k]^2 I)`` in ``d`` dimensions (float64).

    Args:
        means: ``K`` centres of dimension ``d`` (``(K, d)``; a flat ``(K,)`` is one-dimensional).
        stds: ``K`` standard deviations ``s_k > 0``.
        weights: ``K`` mixing weights ``> 0``, normalised here; equal when omitted.

    >>> from diffusion_schemes.conformance.mixture import GaussianMixture
    >>> round(GaussianMixture(means=[[0.0, 0.0]], stds=[2.0]).std(), 6)
    2.0
    >>> GaussianMixture(means=[[0.0], [1.0]], stds=[1.0])
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.InvalidArgumentError: a mixture needs means shaped (K, d), stds (K,) and weights (K,); got (2, 1), (1,) and (2,)
    """

    def __init__(self, means: Any, stds: Any, weights: Any = None) -> None:
        self.means = torch.as_tensor(means, dtype=torch.float64)
        if self.means.ndim == 1:
            self.means = self.means[:, None]
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        k = self.means.shape[0]
        w = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if self.means.ndim != 2 or self.stds.shape != (k,) or w.shape != (k,):
            raise InvalidArgumentError(
                f"a mixture needs means shaped (K, d), stds (K,) and weights (K,); got {tuple(self.means.shape)}, "
                f"{tuple(self.stds.shape)} and {tuple(w.shape)}"
            )
        if not bool((self.stds > 0).all()) or not bool((w > 0).all()):
            raise InvalidArgumentError("mixture stds and weights must all be > 0 (a component of zero spread or weight)")
        self.weights = w / w.sum()

    @property
    def dim(self) -> int:
        """The dimension ``d``."""
        return self.means.shape[1]

    def noisy(self, sigma: float) -> GaussianMixture:
        """The mixture of ``x0 + sigma eps``: every component's variance grows by ``sigma^2``."""
        return GaussianMixture(self.means, (self.stds**2 + sigma**2).sqrt(), self.weights)

    def std(self) -> float:
        """Root mean over coordinates of the per-coordinate variance of the mixture."""
        second = (self.weights[:, None] * (self.means**2 + self.stds[:, None] ** 2)).sum(0)
        mean = (self.weights[:, None] * self.means).sum(0)
        return float((second - mean**2).mean().sqrt())

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` float64 draws, shaped ``(n, d)``."""
        return self.sample_labelled(n, generator)[0]

    def sample_labelled(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` float64 draws and the component each was drawn from (its class label)."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[comp] + self.stds[comp, None] * noise, comp

    def _log_components(self, x: torch.Tensor, sigma: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``log pi_k N(x; mu_k, v_k I)`` shaped ``(B, K)`` and the variances ``v_k = s_k^2 + sigma^2``."""
        x = x.to(torch.float64)
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1, 1)
        var = self.stds[None, :].to(x.device) ** 2 + sigma**2  # (B or 1, K)
        sq = ((x[:, None, :] - self.means[None].to(x.device)) ** 2).sum(-1)  # (B, K)
        log_n = -0.5 * sq / var - 0.5 * self.dim * torch.log(2 * math.pi * var)
        return self.weights.to(x.device).log()[None] + log_n, var

    def log_prob(self, x: torch.Tensor, sigma: Any = 0.0) -> torch.Tensor:
        """``log p_sigma(x)`` (float64, shape ``(B,)``); ``sigma = 0`` is the data density."""
        return torch.logsumexp(self._log_components(x, sigma)[0], dim=1)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable component of each point (the Bayes classifier of the data density)."""
        return self._log_components(x, 0.0)[0].argmax(1)

    def score(self, x: torch.Tensor, sigma: Any = 0.0) -> torch.Tensor:
        """``grad_x log p_sigma(x)`` in closed form (float64)."""
        log_c, var = self._log_components(x, sigma)
        resp = torch.softmax(log_c, dim=1)  # (B, K)
        diff = self.means[None].to(x.device) - x.to(torch.float64)[:, None, :]  # (B, K, d)
        return (resp[..., None] * diff / var[..., None]).sum(1)

    def denoise(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        """``E[x0 | x0 + sigma eps = x]`` for ``x`` shaped ``(B, d)`` and sigma a scalar or ``(B,)``, in ``x``'s dtype."""
        log_c, var = self._log_components(x, sigma)
        resp = torch.softmax(log_c, dim=1)
        shrink = (self.stds[None].to(x.device) ** 2 / var)[..., None]  # (B or 1, K, 1)
        mu = self.means[None].to(x.device)
        post = mu + shrink * (x.to(torch.float64)[:, None, :] - mu)
        return (resp[..., None] * post).sum(1).to(x.dtype)

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        """The CDF of a one-dimensional mixture."""
        z = (x[..., None] - self.means[:, 0]) / self.stds
        return (self.weights * 0.5 * (1 + torch.erf(z / math.sqrt(2)))).sum(-1)

    def quantile(self, u: torch.Tensor) -> torch.Tensor:
        """The inverse CDF of a one-dimensional mixture (bisection to float64 precision)."""
        lo = torch.full_like(u, float((self.means[:, 0] - 12 * self.stds).min()))
        hi = torch.full_like(u, float((self.means[:, 0] + 12 * self.stds).max()))
        for _ in range(80):
            mid = (lo + hi) / 2
            below = self.cdf(mid) < u
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return (lo + hi) / 2

    def wasserstein1(self, samples: torch.Tensor) -> float:
        """The 1-D Wasserstein distance between the empirical law of ``samples`` and the mixture."""
        x = samples.reshape(-1).to(torch.float64).sort().values
        u = (torch.arange(x.shape[0], dtype=torch.float64) + 0.5) / x.shape[0]
        return float((x - self.quantile(u)).abs().mean())


class ClassConditionalMixture:
    """Classes ``k`` with probabilities ``p_k``, each a :class:`GaussianMixture`; exact conditional denoisers.

    The condition is a one-hot row per sample (shape ``(B, K)``); a row of zeros, or no condition
    at all, means "unconditional": the denoiser of the whole mixture ``sum_k p_k p(x0 | k)``. With
    it both branches of classifier-free guidance are known exactly.
    """

    def __init__(self, class_weights: Any, classes: Sequence[GaussianMixture]) -> None:
        self.classes = list(classes)
        p = torch.as_tensor(class_weights, dtype=torch.float64)
        p = p / p.sum()
        self.whole = GaussianMixture(
            torch.cat([c.means for c in self.classes]),
            torch.cat([c.stds for c in self.classes]),
            torch.cat([pk * c.weights for pk, c in zip(p, self.classes)]),
        )
        self.dim = self.whole.dim

    def denoise(self, x: torch.Tensor, sigma: Any, condition: Any = None) -> torch.Tensor:
        whole = self.whole.denoise(x, sigma)
        if condition is None:
            return whole
        condition = condition.to(torch.float64)
        per_class = torch.stack([c.denoise(x, sigma) for c in self.classes])  # (K, B, d)
        picked = per_class[condition.argmax(1), torch.arange(x.shape[0])]
        null = (condition == 0).all(1, keepdim=True)
        return torch.where(null, whole, picked.to(whole.dtype))


class ExactX0(torch.nn.Module):
    """The mixture's exact denoiser as an x0-predictor ``f(x, t)`` for ``schedule`` (time to noise level).

    It holds one parameter, so device checks have something to look at.
    """

    def __init__(self, mixture: GaussianMixture | ClassConditionalMixture, schedule: Any) -> None:
        super().__init__()
        self.mixture, self.schedule = mixture, schedule
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, t: Any, condition: Any = None) -> torch.Tensor:
        if condition is None:
            return self.mixture.denoise(x, self.schedule.noise_level(t))
        return self.mixture.denoise(x, self.schedule.noise_level(t), condition)


class OracleBackbone(torch.nn.Module):
    """A backbone ``F`` that makes a preconditioner output the mixture's exact denoiser.

    ``noise_level_of(c_noise)`` inverts the preconditioner's ``c_noise``; with the noise level known,
    ``F(c_in x, c_noise) = (D(x; sigma) - c_skip x) / c_out``. It checks that the pipeline gives a
    preconditioner the noise level it means, whatever the schedule.
    """

    def __init__(self, mixture: GaussianMixture | ClassConditionalMixture, noise_level_of: Any) -> None:
        super().__init__()
        self.mixture, self.noise_level_of = mixture, noise_level_of
        self.precond: Any = None  # set by oracle_preconditioner (the preconditioner holds this module)

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, condition: Any = None) -> torch.Tensor:
        sigma = self.noise_level_of(c_noise.to(torch.float64))
        c_in, _, c_out, c_skip = self.precond.coefficients(sigma, x_in.ndim)
        x = x_in.to(torch.float64) / c_in
        d = self.mixture.denoise(x, sigma) if condition is None else self.mixture.denoise(x, sigma, condition)
        return ((d - c_skip * x) / c_out).to(x_in.dtype)


def oracle_preconditioner(build: Any, mixture: GaussianMixture | ClassConditionalMixture, noise_level_of: Any) -> Any:
    """``build(backbone)``: a preconditioner whose output is the mixture's exact denoiser."""
    backbone = OracleBackbone(mixture, noise_level_of)
    precond = build(backbone)
    object.__setattr__(backbone, "precond", precond)  # not a submodule (no cycle in the module tree)
    return precond
