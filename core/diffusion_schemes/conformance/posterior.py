"""An exact oracle for inverse problems: the posteriors of Gaussian and Gaussian-mixture data under a linear
Gaussian measurement, in float64.

For a prior ``x0 ~ N(m, C)`` and ``y = A x0 + noise_std eta`` the posterior is Gaussian with
precision ``C^-1 + A^T A / noise_std^2`` and mean ``P^-1 (C^-1 m + A^T y / noise_std^2)``
(Bishop 2006, eq. 2.116-2.117); with ``noise_std = 0`` it is the Gaussian conditioned on
``A x0 = y``: mean ``m + C A^T (A C A^T)^-1 (y - A m)`` and covariance ``C - C A^T (A C A^T)^-1 A C``
(eq. 2.81-2.82). A mixture prior gives a mixture posterior: each component is updated that way
and reweighted by its evidence ``N(y; A m_k, A C_k A^T + noise_std^2 I)``, enumerated over the
components. Nothing here calls the sampling pipeline: the tests of ``ds.Posterior`` and
``benchmarks/inverse_problems.py`` hold it against these closed forms.
"""

from __future__ import annotations

import math

import torch

__all__ = ["MixturePosterior", "covariance_root", "denoised_posterior_mean", "gaussian_posterior", "sliced_w1"]


def gaussian_posterior(mean, cov, A, y, noise_std):
    """``(mean, cov)`` of ``x0 | y`` for ``x0 ~ N(mean, cov)``, ``y = A x0 + noise_std eta`` (one ``y``)."""
    mean, cov, A, y = (torch.as_tensor(v, dtype=torch.float64) for v in (mean, cov, A, y))
    if noise_std == 0:
        gain = cov @ A.T @ torch.linalg.inv(A @ cov @ A.T)
        return mean + gain @ (y - A @ mean), cov - gain @ A @ cov
    precision = torch.linalg.inv(cov) + A.T @ A / noise_std**2
    post_cov = torch.linalg.inv(precision)
    return post_cov @ (torch.linalg.solve(cov, mean) + A.T @ y / noise_std**2), post_cov


def denoised_posterior_mean(x, sigma, mean, std, A, y, noise_std):
    """``E[x0 | x, y]`` for ``x0 ~ N(mean, std^2 I)``, ``x = x0 + sigma eps``, ``y = A x0 + noise``; rows of x, y.

    ``x`` and ``y`` are independent given ``x0``, so the posterior is updated on ``x`` (the identity
    operator with noise ``sigma``), then on ``y``.
    """
    d = x.shape[1]
    eye = torch.eye(d, dtype=torch.float64)
    out = []
    for xi, yi in zip(x.to(torch.float64), y.to(torch.float64)):
        m, c = gaussian_posterior(mean, std**2 * eye, eye, xi, float(sigma))
        out.append(gaussian_posterior(m, c, A, yi, noise_std)[0])
    return torch.stack(out)


def covariance_root(cov):
    """A matrix ``R`` with ``R R^T = cov`` for a positive semi-definite ``cov`` (eigenvalues clamped at 0)."""
    values, vectors = torch.linalg.eigh(torch.as_tensor(cov, dtype=torch.float64))
    return vectors * values.clamp_min(0).sqrt()


class MixturePosterior:
    """The posterior of ``sum_k w_k N(mu_k, s_k^2 I)`` given one ``y = A x0 + noise_std eta``, by enumeration."""

    def __init__(self, mixture, A, y, noise_std):
        self.A = torch.as_tensor(A, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64)
        eye = torch.eye(mixture.dim, dtype=torch.float64)
        means, covs, log_w = [], [], []
        for w, mu, s in zip(mixture.weights, mixture.means, mixture.stds):
            m, c = gaussian_posterior(mu, s**2 * eye, self.A, y, noise_std)
            evidence = self.A @ (s**2 * eye) @ self.A.T + noise_std**2 * torch.eye(len(y), dtype=torch.float64)
            r = y - self.A @ mu
            log_w.append(
                torch.log(w) - 0.5 * r @ torch.linalg.solve(evidence, r) - 0.5 * torch.logdet(2 * math.pi * evidence)
            )
            means.append(m)
            covs.append(c)
        self.weights = torch.softmax(torch.stack(log_w), 0)
        self.means, self.covs = torch.stack(means), torch.stack(covs)

    def mean(self):
        return (self.weights[:, None] * self.means).sum(0)

    def cov(self):
        second = (self.weights[:, None, None] * (self.covs + self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return second - self.mean()[:, None] * self.mean()[None, :]

    def sample(self, n, generator=None):
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], dtype=torch.float64, generator=generator)
        roots = torch.stack([covariance_root(c) for c in self.covs])
        return self.means[k] + (roots[k] @ z[:, :, None])[:, :, 0]

    def nearest_weights(self, samples):
        """The fraction of ``samples`` nearest to each component's mean (what a sampler puts in each mode)."""
        nearest = torch.cdist(samples.to(torch.float64), self.means).argmin(1)
        return torch.bincount(nearest, minlength=len(self.weights)).to(torch.float64) / len(samples)


def sliced_w1(a, b, num_directions=64, generator=None):
    """Sliced 1-Wasserstein distance between two equally sized sample sets (mean over random directions)."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    directions = torch.randn(num_directions, a.shape[1], dtype=torch.float64, generator=generator)
    directions = directions / directions.norm(dim=1, keepdim=True)
    pa, pb = (a @ directions.T).sort(0).values, (b @ directions.T).sort(0).values
    return float((pa - pb).abs().mean())
