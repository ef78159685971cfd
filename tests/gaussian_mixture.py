"""Test helper: a Gaussian mixture with isotropic components and its exact denoiser, in float64.

For data ``x0 ~ sum_k w_k N(mu_k, s_k^2 I)`` and ``x = x0 + sigma eps``, the noisy density is
``p(x; sigma) = sum_k w_k N(x; mu_k, (s_k^2 + sigma^2) I)`` and the exact denoiser
(the posterior mean, Tweedie) is

    D(x; sigma) = sum_k r_k(x) [mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k)],

with responsibilities ``r_k(x) proportional to w_k N(x; mu_k, (s_k^2 + sigma^2) I)``. The
probability-flow ODE driven by this D carries ``N(0, sigma_max^2 I)`` (approximately
``p(.; sigma_max)``) onto the mixture, so sampling with it measures only a solver's error.
"""

from __future__ import annotations

import math

import torch


class GaussianMixture:
    """``sum_k weights[k] N(means[k], stds[k]^2 I)`` in ``dim`` dimensions (float64)."""

    def __init__(self, weights, means, stds):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)  # (K, dim)
        if self.means.ndim == 1:
            self.means = self.means[:, None]
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()
        self.dim = self.means.shape[1]

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """``D(x; sigma)`` for ``x`` shaped ``(B, dim)`` and sigma a scalar or ``(B,)``."""
        dtype = x.dtype
        x = x.to(torch.float64)
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1, 1)  # (B or 1, 1)
        var = self.stds**2 + sigma**2  # (B, K)
        diff = x[:, None, :] - self.means[None]  # (B, K, dim)
        log_r = (
            self.weights.log()
            - 0.5 * (diff**2).sum(-1) / var
            - 0.5 * self.dim * torch.log(2 * math.pi * var)
        )
        r = torch.softmax(log_r, dim=1)  # (B, K)
        posterior_mean = self.means[None] + (self.stds**2 / var)[..., None] * diff
        return (r[..., None] * posterior_mean).sum(1).to(dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * eps

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        """CDF of a 1-D mixture."""
        z = (x[..., None] - self.means[:, 0]) / self.stds
        return (self.weights * 0.5 * (1 + torch.erf(z / math.sqrt(2)))).sum(-1)

    def quantile(self, u: torch.Tensor) -> torch.Tensor:
        """Inverse CDF of a 1-D mixture (bisection to float64 precision)."""
        lo = torch.full_like(u, float((self.means[:, 0] - 12 * self.stds).min()))
        hi = torch.full_like(u, float((self.means[:, 0] + 12 * self.stds).max()))
        for _ in range(80):
            mid = (lo + hi) / 2
            below = self.cdf(mid) < u
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return (lo + hi) / 2

    def wasserstein1(self, samples: torch.Tensor) -> float:
        """1-D Wasserstein distance between the empirical law of ``samples`` and the mixture."""
        x = samples.reshape(-1).to(torch.float64).sort().values
        n = x.shape[0]
        u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        return float((x - self.quantile(u)).abs().mean())


class ClassConditionalMixture:
    """Classes ``k`` with probabilities ``p_k``, each a :class:`GaussianMixture`; exact conditional denoisers.

    The condition is a one-hot row per sample (float64, shape ``(B, K)``); a row of zeros, or
    no condition at all, means "unconditional": the denoiser of the whole mixture
    ``sum_k p_k p(x0 | k)``. Used to check guidance, whose two branches are then known exactly.
    """

    def __init__(self, class_weights, classes):
        self.classes = list(classes)
        p = torch.as_tensor(class_weights, dtype=torch.float64)
        p = p / p.sum()
        self.whole = GaussianMixture(
            torch.cat([pk * c.weights for pk, c in zip(p, self.classes)]),
            torch.cat([c.means for c in self.classes]),
            torch.cat([c.stds for c in self.classes]),
        )
        self.dim = self.whole.dim

    def denoise(self, x: torch.Tensor, sigma, condition=None) -> torch.Tensor:
        whole = self.whole.denoise(x, sigma)
        if condition is None:
            return whole
        condition = condition.to(torch.float64)
        per_class = torch.stack([c.denoise(x, sigma) for c in self.classes])  # (K, B, dim)
        picked = per_class[condition.argmax(1), torch.arange(x.shape[0])]
        null = (condition == 0).all(1, keepdim=True)
        return torch.where(null, whole, picked.to(whole.dtype))


class ExactX0(torch.nn.Module):
    """The mixture's exact denoiser as an x0-predictor ``f(x, t)`` for a schedule (t -> noise level).

    It holds one parameter so the device checks have something to look at.
    """

    def __init__(self, mixture: GaussianMixture, schedule):
        super().__init__()
        self.mixture, self.schedule = mixture, schedule
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, condition=None):
        if condition is None:
            return self.mixture.denoise(x, self.schedule.noise_level(t))
        return self.mixture.denoise(x, self.schedule.noise_level(t), condition)


class OracleBackbone(torch.nn.Module):
    """A backbone ``F`` that makes a preconditioner output the exact denoiser.

    ``noise_level_of(c_noise)`` inverts the preconditioner's ``c_noise``; with the noise level
    known, ``F(c_in x, c_noise) = (D(x; sigma) - c_skip x) / c_out``. Used to check that the
    pipeline gives a preconditioner the noise level it means, whatever the schedule.
    """

    def __init__(self, mixture: GaussianMixture, noise_level_of):
        super().__init__()
        self.mixture, self.noise_level_of = mixture, noise_level_of
        self.precond = None  # set after wrapping (the preconditioner holds this module)

    def forward(self, x_in, c_noise, condition=None):
        sigma = self.noise_level_of(c_noise.to(torch.float64))
        c_in, _, c_out, c_skip = self.precond.coefficients(sigma, x_in.ndim)
        x = x_in.to(torch.float64) / c_in
        d = self.mixture.denoise(x, sigma) if condition is None else self.mixture.denoise(x, sigma, condition)
        return ((d - c_skip * x) / c_out).to(x_in.dtype)


def oracle_preconditioner(build, mixture: GaussianMixture, noise_level_of):
    """``build(backbone)`` a preconditioner whose output is the mixture's exact denoiser."""
    backbone = OracleBackbone(mixture, noise_level_of)
    precond = build(backbone)
    object.__setattr__(backbone, "precond", precond)  # not a submodule (no cycle in the module tree)
    return precond
